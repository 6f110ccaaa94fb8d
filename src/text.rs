//! Text from outside — names a caller sent, messages a store or Twilio
//! answered — cut to a bound before it reaches a log line or an error, so
//! nobody can grow the log or an error message by sending long text.

use std::borrow::Cow;

/// The most of a service's message an error carries.
pub const SAID_BYTES: usize = 256;

/// `text` cut at `max` bytes (on a character boundary), with its full
/// length said when it was cut.
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return text.into();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…({} bytes)", &text[..end], text.len()).into()
}

/// What a service said, as an error quotes it: at most [`SAID_BYTES`],
/// control characters (newlines that would forge log lines) as spaces.
pub fn said(text: &str) -> String {
    cut(text, SAID_BYTES).replace(|c: char| c.is_control(), " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(cut("verify", 128), "verify");
        let long = "é".repeat(200);
        let shown = cut(&long, 128);
        assert!(shown.len() < 128 + 20, "{shown}");
        assert!(shown.ends_with("…(400 bytes)"), "{shown}");
        assert_eq!(said("a\nb\tc"), "a b c");
        assert!(said(&"x".repeat(1 << 20)).len() < SAID_BYTES + 20);
    }
}
