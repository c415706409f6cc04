//! Places on the earth: validated points, great-circle distances
//! (haversine), the bounding box of a search radius and the distance texts
//! of nearby people (PROTOCOL §1.2 `geo/users`).

/// Mean earth radius in metres (IUGG).
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A longitude and a latitude in degrees, both finite and in range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// −180…180.
    pub lon: f64,
    /// −90…90.
    pub lat: f64,
}

impl Point {
    /// A point when both coordinates are finite and in range.
    pub fn new(lon: f64, lat: f64) -> Option<Point> {
        let ok = lon.is_finite()
            && lat.is_finite()
            && (-180.0..=180.0).contains(&lon)
            && (-90.0..=90.0).contains(&lat);
        ok.then_some(Point { lon, lat })
    }

    /// A point from two texts (`longitude`, `latitude` parameters).
    pub fn parse(lon: &str, lat: &str) -> Option<Point> {
        Point::new(lon.trim().parse().ok()?, lat.trim().parse().ok()?)
    }

    /// Great-circle distance in metres (haversine).
    pub fn distance_m(&self, other: &Point) -> f64 {
        let (p1, p2) = (self.lat.to_radians(), other.lat.to_radians());
        let dp = p2 - p1;
        let dl = (other.lon - self.lon).to_radians();
        let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
        2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
    }
}

/// The box holding every point within `radius_m` of `center`:
/// `((lat_min, lat_max), (west, east))`, west > east when it crosses the
/// antimeridian, the whole longitude range near a pole (J. Matuschek,
/// "Finding points within a distance of a latitude/longitude using bounding
/// coordinates").
pub fn bounding_box(center: Point, radius_m: f64) -> ((f64, f64), (f64, f64)) {
    let r = radius_m / EARTH_RADIUS_M;
    let lat = center.lat.to_radians();
    let (mut lat_min, mut lat_max) = (lat - r, lat + r);
    let all = (-180.0, 180.0);
    if lat_min <= -std::f64::consts::FRAC_PI_2 || lat_max >= std::f64::consts::FRAC_PI_2 {
        lat_min = lat_min.max(-std::f64::consts::FRAC_PI_2);
        lat_max = lat_max.min(std::f64::consts::FRAC_PI_2);
        return ((lat_min.to_degrees(), lat_max.to_degrees()), all);
    }
    let dlon = (r.sin() / lat.cos()).asin().to_degrees();
    if !dlon.is_finite() || dlon >= 180.0 {
        return ((lat_min.to_degrees(), lat_max.to_degrees()), all);
    }
    let wrap = |x: f64| {
        if x < -180.0 {
            x + 360.0
        } else if x > 180.0 {
            x - 360.0
        } else {
            x
        }
    };
    (
        (lat_min.to_degrees(), lat_max.to_degrees()),
        (wrap(center.lon - dlon), wrap(center.lon + dlon)),
    )
}

/// The distance text of a nearby person. The distance is rounded to 100 m
/// first, and is at least 100 m, so that nobody's exact position leaks; then
/// `"<n>m"` below 1 km, else `"<x.xx>km"`.
pub fn format_distance(metres: f64) -> String {
    let rounded = ((metres / 100.0).round() * 100.0).max(100.0);
    if rounded < 1000.0 {
        format!("{}m", rounded as u32)
    } else {
        format!("{:.2}km", rounded / 1000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_validated() {
        assert!(Point::new(180.0, -90.0).is_some());
        assert!(Point::new(-180.0, 90.0).is_some());
        for (lon, lat) in [
            (180.1, 0.0),
            (0.0, -90.1),
            (f64::NAN, 0.0),
            (0.0, f64::INFINITY),
        ] {
            assert!(Point::new(lon, lat).is_none(), "{lon} {lat}");
        }
        assert_eq!(Point::parse(" 116.4 ", "39.9"), Point::new(116.4, 39.9));
        for (lon, lat) in [
            ("", "1"),
            ("x", "1"),
            ("NaN", "1"),
            ("inf", "1"),
            ("1e999", "1"),
        ] {
            assert!(Point::parse(lon, lat).is_none(), "{lon:?}");
        }
    }

    #[test]
    fn haversine_distances() {
        let beijing = Point::new(116.4074, 39.9042).unwrap();
        let shanghai = Point::new(121.4737, 31.2304).unwrap();
        let d = beijing.distance_m(&shanghai);
        assert!((d - 1_067_000.0).abs() < 3_000.0, "{d}");
        assert_eq!(beijing.distance_m(&beijing), 0.0);
        // One degree of latitude is about 111.2 km everywhere.
        let a = Point::new(10.0, 0.0).unwrap();
        let b = Point::new(10.0, 1.0).unwrap();
        assert!((a.distance_m(&b) - 111_195.0).abs() < 1.0);
        // Across the antimeridian.
        let east = Point::new(179.99, 0.0).unwrap();
        let west = Point::new(-179.99, 0.0).unwrap();
        assert!((east.distance_m(&west) - 2_224.0).abs() < 1.0);
    }

    #[test]
    fn boxes_hold_the_circle() {
        let c = Point::new(116.4, 39.9).unwrap();
        let ((s, n), (w, e)) = bounding_box(c, 10_000.0);
        assert!(s < 39.9 && n > 39.9 && w < 116.4 && e > 116.4);
        assert!((n - 39.9 - 0.0899).abs() < 0.001);
        let edge = Point::new(116.4, n).unwrap();
        assert!((c.distance_m(&edge) - 10_000.0).abs() < 1.0);
        // Crossing the antimeridian: west > east.
        let ((_, _), (w, e)) = bounding_box(Point::new(179.95, 0.0).unwrap(), 20_000.0);
        assert!(w > e && w > 179.0 && e < -179.0, "{w} {e}");
        // Near a pole every longitude is in.
        let ((_, n), lon) = bounding_box(Point::new(0.0, 89.9).unwrap(), 50_000.0);
        assert_eq!((n, lon), (90.0, (-180.0, 180.0)));
    }

    #[test]
    fn distance_texts() {
        for (m, text) in [
            (0.0, "100m"),
            (49.0, "100m"),
            (149.9, "100m"),
            (150.0, "200m"),
            (949.0, "900m"),
            (950.0, "1.00km"),
            (1000.0, "1.00km"),
            (1234.0, "1.20km"),
            (1250.0, "1.30km"),
            (12_345.0, "12.30km"),
            (99_999.0, "100.00km"),
        ] {
            assert_eq!(format_distance(m), text, "{m}");
        }
    }
}
