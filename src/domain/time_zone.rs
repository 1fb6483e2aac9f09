//! `ADMIN_TIME_ZONE` (SPEC §12): the zone the merchant's page shows times
//! and counts days in. An IANA name (`Asia/Kolkata`), looked up once at start
//! in the tz database jiff bundles, so an unknown name is a configuration
//! error, not a page that silently shows UTC.

use jiff::tz::TimeZone;
use jiff::Timestamp;

#[derive(Debug, Clone)]
pub struct AdminZone {
    name: String,
    zone: TimeZone,
}

impl Default for AdminZone {
    fn default() -> AdminZone {
        AdminZone {
            name: "UTC".into(),
            zone: TimeZone::UTC,
        }
    }
}

impl AdminZone {
    pub fn parse(name: &str) -> Result<AdminZone, String> {
        let name = name.trim();
        // jiff also reads POSIX TZ strings and fixed offsets; the setting
        // promises an IANA name, which is what a merchant can look up.
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c))
        {
            return Err(format!(
                "{name:?} is not an IANA time zone name such as Asia/Kolkata"
            ));
        }
        TimeZone::get(name)
            .map(|zone| AdminZone {
                name: name.to_owned(),
                zone,
            })
            .map_err(|_| format!("{name:?} is not a time zone this build knows (an IANA name such as Asia/Kolkata or Europe/Berlin)"))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A moment as the page shows it: `06 Dec 2026, 21:05:42 IST`.
    pub fn format(&self, ms: i64) -> Option<String> {
        let t = Timestamp::from_millisecond(ms).ok()?;
        Some(
            t.to_zoned_datetime(self.zone.clone())
                .strftime("%d %b %Y, %H:%M:%S %Z")
                .to_string(),
        )
    }

    /// A day as the page names it: `Sun 06 Dec`.
    pub fn day(&self, ms: i64) -> Option<String> {
        let t = Timestamp::from_millisecond(ms).ok()?;
        Some(
            t.to_zoned_datetime(self.zone.clone())
                .strftime("%a %d %b")
                .to_string(),
        )
    }

    /// The starts of the last `n` days (today's included), oldest first, in
    /// milliseconds: local midnights, so a day is 23 or 25 hours long where
    /// the clocks change.
    pub fn day_starts(&self, now_ms: i64, n: usize) -> Vec<i64> {
        let Ok(now) = Timestamp::from_millisecond(now_ms) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(n);
        let mut day = now.to_zoned_datetime(self.zone.clone()).start_of_day().ok();
        while let Some(start) = day.filter(|_| out.len() < n) {
            out.push(start.timestamp().as_millisecond());
            day = start.yesterday().and_then(|d| d.start_of_day()).ok();
        }
        out.reverse();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_iana_name_is_a_zone_and_anything_else_is_refused() {
        assert_eq!(
            AdminZone::parse("Asia/Kolkata").unwrap().name(),
            "Asia/Kolkata"
        );
        assert!(AdminZone::parse("Asia/Kolkatta").is_err());
        assert!(AdminZone::parse("IST-5:30").is_err());
        assert!(AdminZone::parse("").is_err());
    }

    #[test]
    fn times_and_days_are_the_zone_s() {
        // 2026-12-06T21:05:42Z is 02:35:42 on the 7th in India (UTC+05:30).
        let ms = 1_796_591_142_000;
        let india = AdminZone::parse("Asia/Kolkata").unwrap();
        assert_eq!(india.format(ms).unwrap(), "07 Dec 2026, 02:35:42 IST");
        assert_eq!(
            AdminZone::default().format(ms).unwrap(),
            "06 Dec 2026, 21:05:42 UTC"
        );
        // Today in India began at 2026-12-06T18:30Z, yesterday a day before.
        assert_eq!(
            india.day_starts(ms, 2),
            vec![1_796_495_400_000, 1_796_581_800_000]
        );
        // In Berlin the clocks went back on 2026-10-25: that day has 25 hours.
        let berlin = AdminZone::parse("Europe/Berlin").unwrap();
        // 2026-10-26T12:00Z: the day before began at 2026-10-24T22:00Z.
        let days = berlin.day_starts(1_793_016_000_000, 2);
        assert_eq!(days[1] - days[0], 25 * 3_600_000);
    }
}
