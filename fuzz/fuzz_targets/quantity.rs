//! Resource quantities (`keelson_model::quantity`), as validation reads `resources.requests` and
//! `limits`, the scheduler sums them and the agent turns them into Docker limits.
//!
//! Input: one string. Properties: nothing panics; an accepted quantity has a finite,
//! non-negative value (the scheduler compares sums of them with a node's capacity, and NaN
//! compares false with everything); an accepted quantity is one Kubernetes accepts too
//! (`k8s.io/apimachinery/pkg/api/resource`: a signed decimal number and one suffix — binary SI,
//! decimal SI or a decimal exponent — with surrounding white space trimmed as its JSON decoding
//! does), so what keelson stores, client-go and kubectl can read.

#![no_main]

use keelson_model::quantity::{is_quantity, parse_quantity};
use libfuzzer_sys::fuzz_target;

/// Kubernetes' quantity grammar:
/// `^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$`, with the suffix one of the known ones.
fn kubernetes_accepts(s: &str) -> bool {
    let s = s.trim();
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let split = body
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len());
    let (number, suffix) = body.split_at(split);
    let digits = number.bytes().filter(u8::is_ascii_digit).count();
    let dots = number.bytes().filter(|&b| b == b'.').count();
    if digits == 0 || dots > 1 {
        return false;
    }
    match suffix {
        "" | "n" | "u" | "m" | "k" | "M" | "G" | "T" | "P" | "E" => true,
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => true,
        e => match e.strip_prefix(['e', 'E']) {
            Some(exp) => {
                let exp = exp.strip_prefix(['+', '-']).unwrap_or(exp);
                !exp.is_empty() && exp.bytes().all(|b| b.is_ascii_digit())
            }
            None => false,
        },
    }
}

fuzz_target!(init: keelson_fuzz::report_stack_overflows(), |data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let value = parse_quantity(s);
    assert_eq!(is_quantity(s), value.is_some());
    if let Some(v) = value {
        assert!(v.is_finite() && v >= 0.0, "{s:?} parsed as {v}");
        assert!(
            kubernetes_accepts(s),
            "{s:?} accepted, but Kubernetes refuses it"
        );
    }
});
