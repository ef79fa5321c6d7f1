//! The embedded SQLite store.
//!
//! For now it holds the answer cache: what a vision service answered for a given
//! image under a given action, keyed by (service, sha-256 of the source image,
//! action). Training runs many epochs over the same photos; with the cache a
//! service is asked at most once per (image, action) — a real saving when every
//! request to a cloud API is billed.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};

use crate::protocol::Answer;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open database {path}: {source}")]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error("database error: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("stored answer is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// A service's deterministic verdict on one uploaded image.
///
/// Transport failures and 5xx are *not* outcomes (they may go away and are never
/// cached); a 4xx refusal of the image is, and counts as a failure to agree.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The service answered; possibly with no labels, which is a failure to agree.
    Answer(Answer),
    /// The service refused the image (HTTP 4xx): its message.
    Rejected(String),
}

impl Outcome {
    /// The answer, if there was one.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Outcome::Answer(a) => Some(a),
            Outcome::Rejected(_) => None,
        }
    }
}

/// A cached service answer and the size of what was uploaded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CachedAnswer {
    /// Bytes uploaded for this action.
    pub bytes: usize,
    /// What the service said.
    pub outcome: Outcome,
}

/// The SQLite database. One connection behind a mutex: every statement is short.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        let conn = Connection::open(path).map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        Store::init(conn)
    }

    /// An in-memory database, for tests and one-off runs.
    pub fn in_memory() -> Result<Store, StoreError> {
        Store::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Store, StoreError> {
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = NORMAL;
             CREATE TABLE IF NOT EXISTS answers (
                 service   TEXT NOT NULL,
                 image_sha TEXT NOT NULL,
                 action    TEXT NOT NULL,
                 bytes     INTEGER NOT NULL,
                 outcome   TEXT NOT NULL,
                 created   INTEGER NOT NULL DEFAULT (unixepoch()),
                 PRIMARY KEY (service, image_sha, action)
             );
             -- The Q-head agent's replay memory, which serve no longer keeps.
             DROP TABLE IF EXISTS memory;
             CREATE TABLE IF NOT EXISTS kv (
                 key   TEXT PRIMARY KEY,
                 value TEXT NOT NULL
             );",
        )?;
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached answer for (service, image, action), if any.
    pub fn get_answer(
        &self,
        service: &str,
        image_sha: &str,
        action: &str,
    ) -> Result<Option<CachedAnswer>, StoreError> {
        let row: Option<(i64, String)> = self
            .conn()
            .query_row(
                "SELECT bytes, outcome FROM answers WHERE service = ?1 AND image_sha = ?2 AND action = ?3",
                params![service, image_sha, action],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        match row {
            None => Ok(None),
            Some((bytes, outcome)) => Ok(Some(CachedAnswer {
                bytes: usize::try_from(bytes).unwrap_or(0),
                outcome: serde_json::from_str(&outcome)?,
            })),
        }
    }

    /// Stores (or replaces) an answer.
    pub fn put_answer(
        &self,
        service: &str,
        image_sha: &str,
        action: &str,
        answer: &CachedAnswer,
    ) -> Result<(), StoreError> {
        let outcome = serde_json::to_string(&answer.outcome)?;
        self.conn().execute(
            "INSERT OR REPLACE INTO answers (service, image_sha, action, bytes, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            params![service, image_sha, action, answer.bytes as i64, outcome],
        )?;
        Ok(())
    }

    /// Sets a small named value (the live pair).
    pub fn put_kv(&self, key: &str, value: &str) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO kv (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [key, value],
        )?;
        Ok(())
    }

    /// A named value, if set.
    ///
    /// A damaged value (not UTF-8, or stored as a blob) comes back with replacement
    /// characters rather than as an error: the caller's parse then fails on it as on any
    /// damaged value, and it starts fresh instead of refusing to start.
    pub fn get_kv(&self, key: &str) -> Result<Option<String>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare("SELECT value FROM kv WHERE key = ?1")?;
        let mut rows = stmt.query([key])?;
        Ok(match rows.next()? {
            Some(row) => Some(match row.get_ref(0)? {
                rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                    String::from_utf8_lossy(b).into_owned()
                }
                rusqlite::types::ValueRef::Null => String::new(),
                rusqlite::types::ValueRef::Integer(i) => i.to_string(),
                rusqlite::types::ValueRef::Real(f) => f.to_string(),
            }),
            None => None,
        })
    }

    /// Flushes the write-ahead log into the database file (on shutdown).
    pub fn checkpoint_wal(&self) -> Result<(), StoreError> {
        self.conn()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
        Ok(())
    }

    /// Number of cached answers for a service.
    pub fn answer_count(&self, service: &str) -> Result<u64, StoreError> {
        let n: i64 = self.conn().query_row(
            "SELECT COUNT(*) FROM answers WHERE service = ?1",
            params![service],
            |r| r.get(0),
        )?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Label;

    #[test]
    fn kv_overwrites() {
        let store = Store::in_memory().unwrap();
        store.put_kv("a", "1").unwrap();
        store.put_kv("a", "2").unwrap();
        assert_eq!(store.get_kv("a").unwrap().as_deref(), Some("2"));
        assert_eq!(store.get_kv("b").unwrap(), None);
        // Bit rot: a value that is not UTF-8 reads back damaged, not as an error.
        store
            .conn()
            .execute(
                "INSERT OR REPLACE INTO kv (key, value) VALUES ('c', CAST(X'7B22FF22' AS TEXT))",
                [],
            )
            .unwrap();
        assert_eq!(store.get_kv("c").unwrap().as_deref(), Some("{\"\u{FFFD}\""));
    }

    #[test]
    fn answers_round_trip_and_are_keyed_by_all_three() {
        let store = Store::in_memory().unwrap();
        let a = CachedAnswer {
            bytes: 1234,
            outcome: Outcome::Answer(Answer::new(vec![Label {
                name: "flamingo".into(),
                score: 0.9,
            }])),
        };
        store.put_answer("svc", "abc", "q75", &a).unwrap();
        assert_eq!(store.get_answer("svc", "abc", "q75").unwrap(), Some(a));
        assert_eq!(store.get_answer("svc", "abc", "q55").unwrap(), None);
        assert_eq!(store.get_answer("other", "abc", "q75").unwrap(), None);
        let r = CachedAnswer {
            bytes: 10,
            outcome: Outcome::Rejected("bad image".into()),
        };
        store.put_answer("svc", "abc", "q5", &r).unwrap();
        assert_eq!(store.get_answer("svc", "abc", "q5").unwrap(), Some(r));
        assert_eq!(store.answer_count("svc").unwrap(), 2);
    }
}
