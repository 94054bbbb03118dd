//! The store contract ([`contract`]) on the SQLite backend: one test per behaviour, each in a
//! temporary directory of its own.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use forkmail_store::{StoreLocation, MIGRATIONS};
use rusqlite::Connection;

#[macro_use]
mod contract;

/// Fresh paths in one temporary directory, removed with the backend.
struct Sqlite {
    dir: tempfile::TempDir,
    next: AtomicU32,
}

impl Sqlite {
    fn new() -> Self {
        Sqlite {
            dir: tempfile::tempdir().expect("temporary directory"),
            next: AtomicU32::new(0),
        }
    }
}

fn path(at: &StoreLocation) -> &PathBuf {
    match at {
        StoreLocation::Sqlite(path) => path,
        StoreLocation::Postgres(_) => unreachable!("the SQLite backend makes SQLite locations"),
    }
}

fn conn(at: &StoreLocation) -> Connection {
    Connection::open(path(at)).expect("open the file directly")
}

impl contract::Backend for Sqlite {
    fn fresh(&self) -> StoreLocation {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        StoreLocation::Sqlite(self.dir.path().join(format!("mail-{n}.db")))
    }

    fn exec(&self, at: &StoreLocation, sql: &str) {
        conn(at).execute_batch(sql).expect(sql);
    }

    fn query_ints(&self, at: &StoreLocation, sql: &str) -> Vec<i64> {
        let conn = conn(at);
        let mut statement = conn.prepare(sql).expect(sql);
        let rows = statement.query_map([], |r| r.get(0)).expect(sql);
        rows.collect::<Result<_, _>>().expect(sql)
    }

    fn make_empty(&self, at: &StoreLocation) {
        std::fs::write(path(at), b"").expect("a 0-byte file");
    }

    fn make_v1(&self, at: &StoreLocation) {
        self.exec(
            at,
            &format!("{}PRAGMA user_version = 1;", MIGRATIONS[0].sqlite),
        );
    }

    fn mark_version(&self, at: &StoreLocation, version: u32) {
        self.exec(
            at,
            &format!(
                "PRAGMA user_version = {version};
                 INSERT INTO schema_migrations (version, name, applied_ms)
                     VALUES ({version}, 'from a newer build', 0);"
            ),
        );
    }
}

macro_rules! sqlite_tests {
    ($($behaviour:ident),* $(,)?) => {
        $(
            #[test]
            fn $behaviour() {
                contract::$behaviour(&Sqlite::new());
            }
        )*
    };
}

for_each_behaviour!(sqlite_tests);
