//! PostgreSQL write-ahead-log positions.
//!
//! An [`Lsn`] is a 64-bit byte position in green's WAL. PostgreSQL prints it as two
//! hexadecimal halves (`16/B374D848`); we parse and print that form so values can be pasted
//! between `psql`, logs and `pgbridge` output.

use std::fmt;
use std::str::FromStr;

/// A WAL position. `Lsn(0)` is PostgreSQL's `InvalidXLogRecPtr`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    pub const ZERO: Lsn = Lsn(0);

    pub fn is_zero(self) -> bool {
        self.0 == 0
    }

    /// Bytes from `self` forward to `later`, 0 when `later` is not ahead.
    pub fn bytes_until(self, later: Lsn) -> u64 {
        later.0.saturating_sub(self.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// Error for a string that is not of the form `X/Y` with hexadecimal halves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid LSN {0:?}: expected two hexadecimal numbers separated by '/', like 0/16B3748")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.to_string());
        let (hi, lo) = s.trim().split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

impl From<u64> for Lsn {
    fn from(v: u64) -> Self {
        Lsn(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_postgres_text_form() {
        for text in ["0/0", "0/16B3748", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            let lsn: Lsn = text.parse().unwrap();
            assert_eq!(lsn.to_string(), text);
        }
        assert_eq!("16/B374D848".parse::<Lsn>().unwrap().0, 0x16_B374_D848);
    }

    #[test]
    fn rejects_malformed_text() {
        for bad in ["", "0", "0/", "/0", "x/1", "1/2/3", "100000000/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn bytes_until_never_underflows() {
        assert_eq!(Lsn(10).bytes_until(Lsn(25)), 15);
        assert_eq!(Lsn(25).bytes_until(Lsn(10)), 0);
    }
}
