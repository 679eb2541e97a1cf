//! Rules for names that become storage keys, shared by the layers that check them (tenant
//! validation, the prompt cache, the prompt store).

/// Prompt names are storage keys: letters, digits, `-`, `_`, `/` (system prompts live under
/// `system/`), no `..`.
pub fn valid_prompt_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.contains("..")
        && !name.starts_with('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '/' | '.'))
}
