//! [`Position`]: where a record starts (or where reading resumes), and
//! [`Checkpoint`], the `epoch:segment:offset` text replay stores in Redis.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A byte position in the journal: segment number, then byte offset in that
/// segment's file. Positions order records: a later record has a greater
/// position. The position just after a record (see
/// [`Record::next`](crate::Record::next)) is where reading resumes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    /// Segment number (the file name, counting from 1).
    pub segment: u64,
    /// Byte offset in the segment file (records start after the header).
    pub offset: u64,
}

impl Position {
    /// The position before every record of every segment: reading from it
    /// starts at the oldest segment still on disk.
    pub const START: Position = Position {
        segment: 0,
        offset: 0,
    };

    /// A position.
    pub const fn new(segment: u64, offset: u64) -> Position {
        Position { segment, offset }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.segment, self.offset)
    }
}

/// A position tagged with the journal's epoch, as replay stores it in the
/// checkpoint key: `epoch:segment:offset`. The epoch is made when a journal
/// directory is first created, so a checkpoint left in Redis by an older,
/// since deleted journal is recognised instead of skipping new records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The journal's epoch ([`Journal::epoch`](crate::Journal::epoch)).
    pub epoch: u64,
    /// Where replay resumes.
    pub position: Position,
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}",
            self.epoch, self.position.segment, self.position.offset
        )
    }
}

/// Why a checkpoint text does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid journal checkpoint {0:?}: expected epoch:segment:offset (three unsigned integers)"
)]
pub struct ParseCheckpointError(pub String);

impl FromStr for Checkpoint {
    type Err = ParseCheckpointError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ParseCheckpointError(s.to_string());
        let mut parts = s.split(':');
        let mut next = || {
            parts
                .next()
                .ok_or_else(bad)?
                .parse::<u64>()
                .map_err(|_| bad())
        };
        let (epoch, segment, offset) = (next()?, next()?, next()?);
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Checkpoint {
            epoch,
            position: Position { segment, offset },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_order_by_segment_then_offset() {
        assert!(Position::new(1, 900) < Position::new(2, 40));
        assert!(Position::new(2, 40) < Position::new(2, 41));
        assert!(Position::START < Position::new(1, 0));
    }

    #[test]
    fn checkpoint_text_round_trips_and_rejects_garbage() {
        let c = Checkpoint {
            epoch: 7,
            position: Position::new(3, 1234),
        };
        assert_eq!(c.to_string(), "7:3:1234");
        assert_eq!("7:3:1234".parse::<Checkpoint>(), Ok(c));
        for bad in ["", "7:3", "7:3:1:2", "a:3:1", "7:-3:1"] {
            assert!(bad.parse::<Checkpoint>().is_err(), "{bad}");
        }
    }
}
