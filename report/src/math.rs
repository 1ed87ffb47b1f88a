//! The two float functions the reports need; `core` has neither.

/// Square root by Newton's method (`x` ≥ 0; negative or NaN gives 0).
pub(crate) fn sqrt(x: f64) -> f64 {
    if x.is_nan() || x <= 0.0 {
        return 0.0;
    }
    if x.is_infinite() {
        return x;
    }
    // Start above the root so the iteration falls monotonically onto it.
    let mut guess = if x > 1.0 { x } else { 1.0 };
    loop {
        let next = 0.5 * (guess + x / guess);
        if next >= guess {
            return guess;
        }
        guess = next;
    }
}

/// Rounds half away from zero to a whole number, as `f64::round` does.
pub(crate) fn round(x: f64) -> f64 {
    // Beyond 2^52 every f64 is whole already.
    if !x.is_finite() || x.abs() >= 4_503_599_627_370_496.0 {
        return x;
    }
    let whole = x as i64 as f64;
    let fraction = x - whole;
    if fraction >= 0.5 {
        whole + 1.0
    } else if fraction <= -0.5 {
        whole - 1.0
    } else {
        whole
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqrt_matches_the_hardware_one() {
        for x in [0.0, 1e-9, 0.25, 1.0, 2.0, 10.0, 12345.678, 1e12, 4e18] {
            let exact = std_sqrt(x);
            assert!((sqrt(x) - exact).abs() <= exact * 1e-15, "{x}");
        }
        assert_eq!(sqrt(-1.0), 0.0);
    }

    fn std_sqrt(x: f64) -> f64 {
        extern crate std;
        x.sqrt()
    }

    #[test]
    fn round_goes_half_away_from_zero() {
        assert_eq!(round(2.5), 3.0);
        assert_eq!(round(2.49), 2.0);
        assert_eq!(round(-2.5), -3.0);
        assert_eq!(round(1e300), 1e300);
    }
}
