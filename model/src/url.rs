//! Percent-encoding of a URL path segment or query value, for every client of the API: `keelson
//! ctl`, the agent and the bench (keelson-bench).

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// What stays as it is: RFC 3986's unreserved characters.
const KEEP: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes `s` for a URL path segment or query value.
pub fn enc(s: &str) -> String {
    utf8_percent_encode(s, KEEP).to_string()
}

#[cfg(test)]
mod tests {
    use super::enc;

    #[test]
    fn unreserved_stay_and_the_rest_is_escaped() {
        assert_eq!(enc("a-Z_0.9~"), "a-Z_0.9~");
        assert_eq!(enc("spec.nodeName=n 1"), "spec.nodeName%3Dn%201");
        assert_eq!(enc("app in (a,b)"), "app%20in%20%28a%2Cb%29");
        assert_eq!(enc("é/"), "%C3%A9%2F");
    }
}
