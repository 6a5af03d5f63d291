//! The Mollweide projection of the status page's sky map, as the sky is seen from inside:
//! centred on RA = 180°, RA increasing to the left (360° at the left edge, 0° at the right
//! one), north up.
//!
//! The projection's auxiliary angle θ solves 2θ + sin 2θ = π sin φ (φ the declination), by
//! Newton's method on t = 2θ: t ← t − (t + sin t − π sin φ) / (1 + cos t), at most
//! [`NEWTON_STEPS`] steps. Near the poles the derivative vanishes and Newton's method slows to
//! linear convergence, so the poles themselves are answered exactly (θ = ±π/2) and any
//! iterate past ±π is clamped back.

use std::f64::consts::{FRAC_PI_2, PI, SQRT_2};

/// Half the width of the projected sky: x is in [−2√2, 2√2].
pub const X_MAX: f64 = 2.0 * SQRT_2;
/// Half the height: y is in [−√2, √2].
pub const Y_MAX: f64 = SQRT_2;
/// The most Newton steps taken for θ.
pub const NEWTON_STEPS: usize = 100;

/// Where (RA, Dec) in degrees falls on the map, as (x, y) in the units of [`X_MAX`] and
/// [`Y_MAX`] (x to the right, y up); `None` for a declination outside [−90, 90] or a value
/// that is not finite. Any finite RA is taken modulo 360.
pub fn mollweide(ra_deg: f64, dec_deg: f64) -> Option<(f64, f64)> {
    if !ra_deg.is_finite() || !dec_deg.is_finite() || dec_deg.abs() > 90.0 {
        return None;
    }
    let ra = ra_deg.rem_euclid(360.0);
    // Longitude from the centre, positive to the right: RA 0 at the right edge (λ = π), RA 180
    // in the middle, RA just below 360 at the left edge (λ → −π).
    let lambda = (180.0 - ra).to_radians();
    let theta = auxiliary(dec_deg.to_radians());
    Some((X_MAX / PI * lambda * theta.cos(), Y_MAX * theta.sin()))
}

/// θ for declination `phi` (radians): the root of 2θ + sin 2θ = π sin φ.
pub fn auxiliary(phi: f64) -> f64 {
    if (phi.abs() - FRAC_PI_2).abs() < 1e-12 {
        return phi.signum() * FRAC_PI_2;
    }
    let target = PI * phi.sin();
    // t = 2θ; φ itself (doubled) is a good start everywhere but near the poles.
    let mut t = 2.0 * phi;
    for _ in 0..NEWTON_STEPS {
        let f = t + t.sin() - target;
        let d = 1.0 + t.cos();
        if d <= f64::EPSILON {
            break;
        }
        let step = f / d;
        t = (t - step).clamp(-PI, PI);
        if step.abs() < 1e-13 {
            break;
        }
    }
    t / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: (f64, f64), b: (f64, f64)) -> bool {
        (a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9
    }

    #[test]
    fn the_centre_the_equator_and_the_central_meridian() {
        assert!(close(mollweide(180.0, 0.0).unwrap(), (0.0, 0.0)));
        // On the equator θ = 0: x is linear in RA, y is 0.
        assert!(close(mollweide(90.0, 0.0).unwrap(), (X_MAX / 2.0, 0.0)));
        assert!(close(mollweide(270.0, 0.0).unwrap(), (-X_MAX / 2.0, 0.0)));
        assert!(close(mollweide(0.0, 0.0).unwrap(), (X_MAX, 0.0)));
        // On the central meridian x is 0 and y grows with Dec, symmetric about the equator.
        let (x, y) = mollweide(180.0, 45.0).unwrap();
        assert!(x.abs() < 1e-12);
        assert!(y > 0.0 && y < Y_MAX);
        let (_, y_south) = mollweide(180.0, -45.0).unwrap();
        assert!((y + y_south).abs() < 1e-12);
    }

    #[test]
    fn the_poles_are_points_at_the_top_and_bottom() {
        for ra in [0.0, 42.0, 180.0, 359.0] {
            assert!(close(mollweide(ra, 90.0).unwrap(), (0.0, Y_MAX)), "{ra}");
            assert!(close(mollweide(ra, -90.0).unwrap(), (0.0, -Y_MAX)), "{ra}");
        }
        assert_eq!(mollweide(0.0, 90.5), None);
        assert_eq!(mollweide(0.0, -91.0), None);
        assert_eq!(mollweide(f64::NAN, 0.0), None);
        assert_eq!(mollweide(0.0, f64::INFINITY), None);
    }

    #[test]
    fn ra_increases_to_the_left_and_wraps() {
        let x = |ra: f64| mollweide(ra, 10.0).unwrap().0;
        assert!(x(100.0) > x(200.0), "larger RA is further left");
        assert!(
            x(359.9) < -X_MAX * 0.9,
            "just below 360 is at the left edge"
        );
        assert!(x(0.1) > X_MAX * 0.9, "just above 0 is at the right edge");
        assert!(close(
            mollweide(360.0, 10.0).unwrap(),
            mollweide(0.0, 10.0).unwrap()
        ));
        assert!(close(
            mollweide(-10.0, 10.0).unwrap(),
            mollweide(350.0, 10.0).unwrap()
        ));
        assert!(close(
            mollweide(730.0, 10.0).unwrap(),
            mollweide(10.0, 10.0).unwrap()
        ));
    }

    #[test]
    fn newton_converges_everywhere_including_next_to_the_poles() {
        // Every declination from pole to pole, the last steps a hair from each pole.
        let mut decs: Vec<f64> = (-900..=900).map(|d| f64::from(d) / 10.0).collect();
        decs.extend([89.999_999, -89.999_999, 89.999_999_999, 1e-12, -1e-12]);
        for dec in decs {
            let phi = dec.to_radians();
            let theta = auxiliary(phi);
            assert!(theta.abs() <= FRAC_PI_2, "{dec}: {theta}");
            let residual = 2.0 * theta + (2.0 * theta).sin() - PI * phi.sin();
            assert!(residual.abs() < 1e-9, "{dec}: residual {residual}");
            // Monotonic: θ has the sign of φ.
            assert!(theta * phi >= 0.0, "{dec}");
            let (x, y) = mollweide(0.0, dec).unwrap();
            // Inside the ellipse (x/X_MAX)² + (y/Y_MAX)² ≤ 1.
            let r = (x / X_MAX).powi(2) + (y / Y_MAX).powi(2);
            assert!(r <= 1.0 + 1e-9, "{dec}: {r}");
        }
    }

    #[test]
    fn equal_area_latitude_of_theta_thirty_degrees() {
        // θ = 30° at sin φ = (2θ + sin 2θ) / π = (π/3 + √3/2) / π (φ ≈ 37.5°), where y is half
        // the height.
        let theta = 30f64.to_radians();
        let phi = ((2.0 * theta + (2.0 * theta).sin()) / PI).asin();
        assert!((auxiliary(phi) - theta).abs() < 1e-12);
        let (_, y) = mollweide(123.0, phi.to_degrees()).unwrap();
        assert!((y - Y_MAX * 0.5).abs() < 1e-12);
    }
}
