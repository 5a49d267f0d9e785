//! A few helpers for SVG written by hand: XML escaping and compact numbers.

use std::fmt::Write as _;

/// `text` with the five XML special characters escaped, usable in text and attributes.
/// Characters XML 1.0 forbids (most control characters) become U+FFFD.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' | '\n' | '\r' => out.push(' '),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate with one decimal (enough on screen, and short).
pub fn num(v: f64) -> String {
    let v = if v.is_finite() { v } else { 0.0 };
    let mut s = String::new();
    let _ = write!(s, "{v:.1}");
    if let Some(stripped) = s.strip_suffix(".0") {
        stripped.to_string()
    } else {
        s
    }
}

/// A tick label: `1,234`, `12.5`, `0.02`.
pub fn tick_label(v: f64) -> String {
    if v >= 1000.0 {
        let whole = v.round() as u64;
        let digits = whole.to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if v >= 10.0 || v == v.round() {
        format!("{v:.0}")
    } else if v >= 1.0 {
        format!("{v:.1}")
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_control_characters() {
        assert_eq!(escape(r#"a<b>&"c'"#), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(escape("x\u{1}y\nz"), "x\u{FFFD}y z");
    }

    #[test]
    fn numbers() {
        assert_eq!((num(1.0), num(2.25), num(f64::NAN)), ("1".into(), "2.2".into(), "0".into()));
        assert_eq!(tick_label(25000.0), "25,000");
        assert_eq!(tick_label(0.02), "0.02");
        assert_eq!(tick_label(2.5), "2.5");
        assert_eq!(tick_label(1.0), "1");
    }
}
