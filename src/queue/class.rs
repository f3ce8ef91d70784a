//! Priority classes of send jobs (README "Delivery policy": campaigns yield).

use super::SendJob;

/// A send job's class (README "Delivery policy": campaigns yield). `Bulk` (campaign messages)
/// yields to `Single` (everything else) where a run could wait behind it:
/// - at the fetch (`get_jobs.sql`): single jobs are claimed first (`priority`), and a worker
///   holds at most half its slots' worth of bulk jobs, so a due single job finds a free slot;
/// - at the rate (`policy::throttle`): a bulk run takes a slot only once it has opened and while
///   no single run of its process waits for one.
///
/// A bulk job that yields is simply not fetched: never snoozed, never charged an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Class {
    /// Reminders, ad-hoc and admin sends, system replies.
    #[default]
    Single,
    /// Campaign messages.
    Bulk,
}

/// `apalis.jobs.priority` of a bulk job; single jobs keep apalis' default 0 (so do jobs stored
/// before classes existed). The fetch orders by priority, highest first.
#[macro_export]
macro_rules! bulk_priority {
    () => {
        "-1"
    };
}

impl Class {
    /// Its `apalis.jobs.priority`.
    pub fn priority(self) -> i32 {
        match self {
            Class::Single => 0,
            // Kept equal to `bulk_priority!()` by a test.
            Class::Bulk => -1,
        }
    }
}

impl SendJob {
    pub fn class(&self) -> Class {
        if self.bulk {
            Class::Bulk
        } else {
            Class::Single
        }
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;

    #[test]
    fn the_bulk_priority_in_sql_is_the_bulk_class_priority() {
        assert_eq!(crate::bulk_priority!(), Class::Bulk.priority().to_string());
        assert!(Class::Bulk.priority() < Class::Single.priority());
        assert_eq!(
            Class::Single.priority(),
            0,
            "apalis' default, and older jobs'"
        );
    }

    #[test]
    fn a_send_job_is_bulk_only_when_it_says_so() {
        let id = Uuid::nil();
        let old: SendJob = serde_json::from_value(serde_json::json!({"message_id": id})).unwrap();
        assert_eq!(old.class(), Class::Single);
        let bulk = SendJob {
            message_id: id,
            window: true,
            expires_at: None,
            bulk: true,
        };
        let json = serde_json::to_value(bulk).unwrap();
        assert_eq!(json["bulk"], true);
        let single = SendJob {
            bulk: false,
            ..bulk
        };
        assert!(serde_json::to_value(single).unwrap().get("bulk").is_none());
        assert_eq!(
            serde_json::from_value::<SendJob>(json).unwrap().class(),
            Class::Bulk
        );
    }
}
