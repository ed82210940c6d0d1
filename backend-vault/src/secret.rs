//! A Vault token: zeroized on drop, never in `Debug` output or logs.

use std::fmt;

use reqwest::header::HeaderValue;
use zeroize::Zeroizing;

/// The longest token accepted (Vault's service tokens are about 100 characters; batch tokens a
/// few hundred).
pub(crate) const MAX_TOKEN_LEN: usize = 4096;

/// A Vault token.
#[derive(Clone)]
pub(crate) struct Token(Zeroizing<String>);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// A token read from a data source or a login answer: surrounding whitespace (a file's final
    /// newline) is dropped; the rest must be visible ASCII.
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, &'static str> {
        let text = std::str::from_utf8(raw).map_err(|_| "is not text")?.trim();
        if text.is_empty() {
            return Err("is empty");
        }
        if text.len() > MAX_TOKEN_LEN {
            return Err("is longer than 4096 characters");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("has characters other than visible ASCII");
        }
        Ok(Self(Zeroizing::new(text.to_owned())))
    }

    /// The `X-Vault-Token` header, marked sensitive (never logged by the HTTP stack). [`parse`]
    /// admits only visible ASCII, so this fails only for a token made some other way.
    ///
    /// [`parse`]: Self::parse
    pub(crate) fn header_value(&self) -> Result<HeaderValue, &'static str> {
        let mut v =
            HeaderValue::from_str(&self.0).map_err(|_| "token is not a valid header value")?;
        v.set_sensitive(true);
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens() {
        let t = Token::parse(b"hvs.CAESIabc\n").unwrap();
        assert_eq!(format!("{t:?}"), "Token(<redacted>)");
        assert!(t.header_value().unwrap().is_sensitive());
        for bad in [&b""[..], b"  \n", b"a b", b"\xff", b"tok\x00en"] {
            assert!(Token::parse(bad).is_err(), "{bad:?}");
        }
        assert!(Token::parse(&vec![b'a'; MAX_TOKEN_LEN + 1]).is_err());
    }
}
