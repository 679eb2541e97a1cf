#!/usr/bin/env bash
# Regenerates the system prompts in prompts/system/ (8 kHz, 16-bit, mono WAV) with espeak-ng
# and sox (Debian packages espeak-ng, sox). The WAV files are committed, so running the
# server or the tests never needs these tools; run this only to change a prompt.
set -euo pipefail
cd "$(dirname "$0")/system"

say() { # name, text
  espeak-ng -v en-us -s 150 -w "/tmp/prompt-$1.wav" "$2"
  sox "/tmp/prompt-$1.wav" -r 8000 -c 1 -b 16 "$1.wav" norm -3
  rm -f "/tmp/prompt-$1.wav"
}

# Digits are strung together (counts, dates, numbers): trim espeak's leading and trailing
# silence so "1 0 0" does not take three seconds.
say_short() { # name, text
  espeak-ng -v en-us -s 160 -w "/tmp/prompt-$1.wav" "$2"
  sox "/tmp/prompt-$1.wav" -r 8000 -c 1 -b 16 "$1.wav" norm -3 \
    silence 1 0.02 1% reverse silence 1 0.02 1% reverse pad 0.04 0.06
  rm -f "/tmp/prompt-$1.wav"
}

say welcome "Welcome to Switchyard. For Alice, press 1. For Bob, press 2. To leave a message, press 3. To hear these options again, press 0."
say goodbye "Goodbye."
say invalid "Sorry, that is not a valid choice."
say you-have "You have"
say new-messages "new messages"
say new-message "new message"
say saved-messages "saved messages"
say no-messages "You have no messages."
say enter-pin "Please enter your PIN, followed by the pound key."
say enter-mailbox "Please enter the mailbox number, followed by the pound key."
say wrong-pin "That PIN is not correct."
say leave-message "Please leave a message after the tone. Press pound when you are done."
say unavailable "The person you are calling is not available."
say busy "The person you are calling is busy."
say extension "Extension"
say message-menu "To delete this message, press 7. To save it, press 9. For the next message, press pound."
say message-deleted "Message deleted."
say message-saved "Message saved."
say mailbox-menu "To listen to your messages, press 1. To record your greeting, press 3."
say record-greeting "Record your greeting after the tone. Press pound when you are done."
say from "From"
say received "Received"
for d in 0 1 2 3 4 5 6 7 8 9; do
  words=(zero one two three four five six seven eight nine)
  say_short "digit-$d" "${words[$d]}"
done
say demo-long "This is the Switchyard load test prompt. It plays in a loop until you hang up. \
The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs. \
How vexingly quick daft zebras jump. Sphinx of black quartz, judge my vow. \
The five boxing wizards jump quickly. This prompt will now start again from the beginning."
# The beep before a voicemail recording: 1 kHz, 400 ms.
sox -n -r 8000 -c 1 -b 16 beep.wav synth 0.4 sine 1000 vol 0.5
# Test tone for integration tests: 1 s of 440 Hz.
sox -n -r 8000 -c 1 -b 16 tone-440.wav synth 1.0 sine 440 vol 0.5
# Test pattern for integration tests: 300 ms of 1 kHz then 200 ms of silence (a 500 ms period
# when looped), so prompt timing can be measured on the wire.
sox -n -r 8000 -c 1 -b 16 test-pattern.wav synth 0.3 sine 1000 vol 0.5 pad 0 0.2
