//! `X-Twilio-Signature`: HMAC-SHA1 over the public URL and the sorted POST parameters.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use subtle::ConstantTimeEq;

/// Computes the signature Twilio sends for `url` and `params`.
pub fn compute<K: AsRef<str>, V: AsRef<str>>(token: &str, url: &str, params: &[(K, V)]) -> String {
    sign(token, url, &sorted(params))
}

/// Whether `signature` is valid for `url` as given, or with its default port added or removed.
pub fn verify<K: AsRef<str>, V: AsRef<str>>(
    token: &str,
    url: &str,
    params: &[(K, V)],
    signature: &str,
) -> bool {
    let given = signature.trim().as_bytes();
    let params = sorted(params);
    let mut ok = false;
    for candidate in url_variants(url) {
        let expected = sign(token, &candidate, &params);
        // Constant time per comparison; every variant is always computed.
        ok |= bool::from(expected.as_bytes().ct_eq(given));
    }
    ok
}

/// The parameters in byte order by name, then by value, as the official libraries sort
/// repeated names.
fn sorted<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> Vec<(&str, &str)> {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_unstable_by(|a, b| {
        a.0.as_bytes()
            .cmp(b.0.as_bytes())
            .then(a.1.as_bytes().cmp(b.1.as_bytes()))
    });
    sorted
}

fn sign(token: &str, url: &str, sorted: &[(&str, &str)]) -> String {
    // An HMAC key of any length is valid, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (k, v) in sorted {
        mac.update(k.as_bytes());
        mac.update(v.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// The URL without any `#` fragment, and with its default port toggled.
fn url_variants(url: &str) -> Vec<String> {
    let url = url.split('#').next().unwrap_or(url);
    let mut out = vec![url.to_string()];
    let (scheme, port) = if let Some(rest) = url.strip_prefix("https://") {
        (("https://", rest), ":443")
    } else if let Some(rest) = url.strip_prefix("http://") {
        (("http://", rest), ":80")
    } else {
        return out;
    };
    let (prefix, rest) = scheme;
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(split);
    let host_has_port = authority.rsplit_once(':').is_some_and(|(_, p)| {
        !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && !authority.ends_with(']')
    });
    if let Some(host) = authority.strip_suffix(port) {
        out.push(format!("{prefix}{host}{tail}"));
    } else if !host_has_port {
        out.push(format!("{prefix}{authority}{port}{tail}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(caller: &str) -> Vec<(String, String)> {
        [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", caller),
            ("Digits", "1234"),
            ("From", caller),
            ("To", "+18005551212"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    const URL: &str = "https://mycompany.com/myapp.php?foo=1&bar=2";

    #[test]
    fn the_reference_vectors_are_computed() {
        assert_eq!(
            compute("12345", URL, &params("+12349013030")),
            "0/KCTR6DLpKmkAf8muzZqo1nDgQ="
        );
        assert_eq!(
            compute(
                "12345",
                "https://mycompany.com:443/myapp.php?foo=1&bar=2",
                &params("+12349013030")
            ),
            "EpDEmp1PyjDYp77YxYU3GILBWzE="
        );
        assert_eq!(
            compute("12345", URL, &params("+14158675309")),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
        assert_eq!(
            compute(
                "12345",
                "http://mycompany.com:80/myapp.php?foo=1&bar=2",
                &params("+14158675309")
            ),
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        );
    }

    #[test]
    fn signatures_made_with_or_without_the_default_port_are_accepted() {
        let p = params("+14158675309");
        assert!(verify("12345", URL, &p, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(verify("12345", URL, &p, "kvajT1Ptam85bY51eRf/AJRuM3w="));
        assert!(verify(
            "12345",
            "https://mycompany.com:443/myapp.php?foo=1&bar=2",
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(verify(
            "12345",
            "http://mycompany.com/myapp.php?foo=1&bar=2",
            &p,
            "0ZXoZLH/DfblKGATFgpif+LLRf4="
        ));
    }

    #[test]
    fn wrong_tokens_params_or_signatures_are_rejected() {
        let p = params("+14158675309");
        assert!(!verify("54321", URL, &p, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!verify(
            "12345",
            URL,
            &params("+10000000000"),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify("12345", URL, &p, ""));
        assert!(!verify(
            "12345",
            "https://mycompany.com:8443/myapp.php?foo=1&bar=2",
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }

    #[test]
    fn fragments_are_not_signed() {
        let p = params("+14158675309");
        assert!(verify(
            "12345",
            &format!("{URL}#rc=2"),
            &p,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
    }
}
