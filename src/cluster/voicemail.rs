//! Voicemail shared by a cluster's nodes: a message left through one node is listed, heard,
//! saved and deleted through any other, and message waiting follows on every node.
//!
//! Each message's metadata (folder included) is a key of a JetStream key-value bucket,
//! `<tenant>.<hex mailbox>.<hex id>`; its audio is in the shared blob storage already (the
//! node that took it mirrors it there through its spool). A node publishes the changes its
//! mailbox store makes ([`MailChange`], once on disk) and watches the bucket: a message it
//! lacks is fetched from blob storage (retried while the other node's spool is still moving
//! it) and written into its own store; a folder change or a deletion is applied to its copy.
//! Applying a change tells message waiting on this node, so a phone subscribed here hears of
//! a message left there. A node that was away catches up from the bucket (deletions
//! included); messages it holds that the bucket never had are published when it joins.
//! Changes wait in a file ([`Outbox`]) until the bucket has them: a change made while NATS
//! is away survives the node dying before NATS returns, and is not overwritten by the
//! bucket's older state when the node rejoins.
//! Greetings are not shared yet: each node plays the greeting recorded on it.

use super::nats::{follow_bucket, keep_watching, publish_latest, BucketSpec, KeyChange, Nats};
use super::outbox::Outbox;
use crate::blob::{voicemail_key, BlobStore};
use crate::mailstore::{MailChange, MailStore, Message};
use async_nats::jetstream::kv;
use std::time::Duration;
use tokio::sync::mpsc;

/// How long a node keeps trying to fetch a message another node took.
const FETCH_FOR: Duration = Duration::from_secs(120);

/// Starts publishing this node's voicemail changes (kept in `outbox` until the bucket has
/// them) and applying the other nodes'.
pub fn share(
    nats: Nats,
    bucket: &str,
    replicas: usize,
    mail: MailStore,
    blobs: BlobStore,
    outbox: Outbox,
) {
    let spec = BucketSpec {
        name: bucket.to_string(),
        description: "Switchyard voicemail: every message's metadata by tenant, mailbox and id",
        replicas,
        max_age: Duration::ZERO,
        max_value_size: 16 * 1024,
    };
    let (tx, rx) = mpsc::unbounded_channel::<KeyChange>();
    // What an earlier run could not publish goes first.
    for change in outbox.waiting() {
        let _ = tx.send(change);
    }
    let keeper = outbox.clone();
    mail.replicate_to(std::sync::Arc::new(move |c| {
        let change = match c {
            MailChange::Stored { tenant, message } => {
                let key = bucket_key(&tenant, &message.mailbox, &message.id);
                match serde_json::to_vec(&message) {
                    Ok(json) => (key, Some(json)),
                    Err(_) => return,
                }
            }
            MailChange::Deleted {
                tenant,
                mailbox,
                id,
            } => (bucket_key(&tenant, &mailbox, &id), None),
        };
        if let Err(e) = keeper.keep(&change) {
            tracing::error!(error = %e, "voicemail change not kept for the cluster: lost if this node dies before NATS has it");
        }
        let _ = tx.send(change);
    }));
    let done = outbox.clone();
    tokio::spawn(publish_latest(
        nats.clone(),
        spec.clone(),
        rx,
        "voicemail",
        move |change| done.published(change),
    ));
    tokio::spawn(keep_watching(
        nats.clone(),
        "voicemail",
        move |connections| {
            let (nats, spec, mail, blobs, outbox) = (
                nats.clone(),
                spec.clone(),
                mail.clone(),
                blobs.clone(),
                outbox.clone(),
            );
            async move { mirror_once(&nats, &spec, &mail, &blobs, &outbox, connections).await }
        },
    ));
}

/// The bucket key of a message.
fn bucket_key(tenant: &str, mailbox: &str, id: &str) -> String {
    format!("{tenant}.{}.{}", hex::encode(mailbox), hex::encode(id))
}

/// The (tenant, mailbox, id) of a bucket key, if it is one of ours.
fn parse_key(key: &str) -> Option<(String, String, String)> {
    let mut parts = key.split('.');
    let (tenant, mailbox, id) = (parts.next()?, parts.next()?, parts.next()?);
    let tenant_ok = !tenant.is_empty()
        && tenant
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if parts.next().is_some() || !tenant_ok {
        return None;
    }
    let text = |h: &str| String::from_utf8(hex::decode(h).ok()?).ok();
    Some((tenant.to_string(), text(mailbox)?, text(id)?))
}

/// Publishes messages the bucket never had, then follows every change.
async fn mirror_once(
    nats: &Nats,
    spec: &BucketSpec,
    mail: &MailStore,
    blobs: &BlobStore,
    outbox: &Outbox,
    connections: tokio::sync::watch::Receiver<u64>,
) -> Result<(), String> {
    let kv = nats.bucket(spec).await?;
    for (tenant, msg) in mail.all_messages() {
        let key = bucket_key(&tenant, &msg.mailbox, &msg.id);
        if kv.entry(&key).await.map_err(|e| e.to_string())?.is_none() {
            let json = serde_json::to_vec(&msg).map_err(|e| e.to_string())?;
            let _ = kv.create(&key, json.into()).await;
        }
    }
    follow_bucket(&kv, connections, |entry| async move {
        // A change of ours still waits for the bucket: the bucket's is older.
        if !outbox.waits(&entry.key) {
            apply(&entry, mail, blobs);
        }
        true
    })
    .await
}

fn apply(entry: &kv::Entry, mail: &MailStore, blobs: &BlobStore) {
    let Some((tenant, mailbox, id)) = parse_key(&entry.key) else {
        tracing::warn!(key = ?entry.key, "voicemail bucket: not a key of ours; ignored");
        return;
    };
    if entry.operation != kv::Operation::Put {
        let mail = mail.clone();
        tokio::task::spawn_blocking(move || {
            if mail.delete_remote(&tenant, &mailbox, &id) {
                tracing::info!(%tenant, %mailbox, %id, "voicemail deleted through another node: removed here");
            }
        });
        return;
    }
    let msg = match serde_json::from_slice::<Message>(&entry.value) {
        Ok(m) if m.mailbox == mailbox && m.id == id => m,
        _ => {
            tracing::warn!(key = ?entry.key, "voicemail bucket: not a message of ours; ignored");
            return;
        }
    };
    let (mail, blobs) = (mail.clone(), blobs.clone());
    tokio::spawn(async move {
        if mail.message(&tenant, &mailbox, &id).is_some() {
            let m = mail.clone();
            let _ = tokio::task::spawn_blocking(move || m.update_remote(&tenant, &msg)).await;
            return;
        }
        let key = voicemail_key(&tenant, &mailbox, &id);
        let deadline = tokio::time::Instant::now() + FETCH_FOR;
        loop {
            // The node that took it may still be moving the audio to blob storage.
            if let Ok(bytes) = blobs.get_bytes(&key).await {
                let m = mail.clone();
                let (t, msg2) = (tenant.clone(), msg.clone());
                let stored =
                    tokio::task::spawn_blocking(move || m.import_remote(&t, &msg2, &bytes)).await;
                match stored {
                    Ok(Ok(())) => {
                        tracing::info!(%tenant, %mailbox, %id, "voicemail left through another node: fetched")
                    }
                    other => {
                        tracing::warn!(%tenant, %mailbox, %id, ?other, "voicemail from another node not stored")
                    }
                }
                return;
            }
            if tokio::time::Instant::now() > deadline {
                tracing::warn!(%tenant, %mailbox, %id, "voicemail published by another node never reached blob storage");
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_refuse_what_is_not_ours() {
        let k = bucket_key("demo", "100", "1796622920-77-9a.x");
        assert!(k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-'));
        assert_eq!(
            parse_key(&k),
            Some(("demo".into(), "100".into(), "1796622920-77-9a.x".into()))
        );
        for bad in ["demo.3130", "demo.31.32.33", "Demo.31.32", "demo.zz.32"] {
            assert_eq!(parse_key(bad), None, "{bad}");
        }
    }
}
