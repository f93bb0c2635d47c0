//! Resource quantities (`100m`, `0.5`, `128Mi`, `1e3`), the strings Kubernetes uses for CPU and
//! memory in `resources.requests` and `limits`.
//!
//! keelson keeps quantities as the strings clients sent (k8s-openapi's `Quantity` is a string
//! newtype) and reads their value only where a number is needed: validation, the scheduler's
//! fit, the agent's container limits.

/// A resource quantity such as `100m`, `0.5`, `128Mi`, `1e3`.
pub fn is_quantity(s: &str) -> bool {
    parse_quantity(s).is_some()
}

/// Parses a quantity into its value in base units (cores, bytes). The value is finite and
/// non-negative: a quantity whose value a double cannot hold (`5e10010`, or `0e400`, which is
/// 0 × ∞) is refused, since the scheduler sums requests and compares them with a node's
/// capacity, and NaN compares false with everything (such a pod would fit on any node).
pub fn parse_quantity(s: &str) -> Option<f64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with('e') || e.starts_with('E') => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let value = n * mult;
    (n >= 0.0 && value.is_finite()).then_some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity("100m"), Some(0.1));
        assert_eq!(parse_quantity("128Mi"), Some(128.0 * 1024.0 * 1024.0));
        assert_eq!(parse_quantity("2"), Some(2.0));
        assert_eq!(parse_quantity("1e3"), Some(1000.0));
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(parse_quantity("-1"), None);
    }

    /// Found by the `quantity` fuzz target (fuzz/regressions/quantity/): values a double
    /// cannot hold were accepted as infinity or NaN.
    #[test]
    fn values_beyond_a_double_are_refused() {
        assert_eq!(parse_quantity("005e010010"), None);
        assert_eq!(parse_quantity("0e400"), None);
        assert_eq!(parse_quantity(&format!("1{}", "0".repeat(400))), None);
        assert!(parse_quantity("1e300").is_some_and(f64::is_finite));
        assert_eq!(parse_quantity("0e-400"), Some(0.0));
    }
}
