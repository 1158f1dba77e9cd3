//! Median, minimum and maximum of repeated measurements.

/// A figure measured several times: median with minimum and maximum.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// How many values (NaN values are left out).
    pub n: usize,
}

impl Spread {
    /// The spread of `values` (NaN left out); `None` when nothing is left.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Some(Spread { median, min: v[0], max: v[n - 1], n })
    }

    /// As JSON: `{"median":…,"min":…,"max":…,"n":…}`.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({ "median": self.median, "min": self.min, "max": self.max, "n": self.n })
    }

    /// Reads the JSON form back.
    pub fn from_json(v: &serde_json::Value) -> Option<Spread> {
        Some(Spread {
            median: v.get("median")?.as_f64()?,
            min: v.get("min")?.as_f64()?,
            max: v.get("max")?.as_f64()?,
            n: usize::try_from(v.get("n")?.as_u64()?).ok()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_even_and_nan() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        let s = Spread::of(&[4.0, f64::NAN, 1.0, 2.0, 3.0]).expect("values");
        assert_eq!((s.median, s.min, s.max, s.n), (2.5, 1.0, 4.0, 4));
        assert!(Spread::of(&[f64::NAN]).is_none());
        let back = Spread::from_json(&s.to_json()).expect("round trip");
        assert_eq!(back, s);
    }
}
