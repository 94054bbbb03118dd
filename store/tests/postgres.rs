//! The store contract ([`contract`]) on the PostgreSQL backend, plus what only a server can do:
//! go away while a store is open, or never be there.
//!
//! One throw-away cluster ([`Cluster`]) serves the whole contract, a fresh database per
//! behaviour. The cluster is owned by one test that runs every behaviour in turn, naming each,
//! and stops it when done: a cluster kept in a `static` would never be dropped and would
//! outlive `cargo test`. `FORKMAIL_BEHAVIOUR=part-of-a-name` runs only the matching ones.
//! Without PostgreSQL the tests print `skipped: why` and pass, except under `CI=true`.

use std::net::TcpListener;
use std::ops::ControlFlow;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

use forkmail_store::pgtest::Cluster;
use forkmail_store::{SendLimits, StoreError, StoreLocation, MIGRATIONS};

#[macro_use]
mod contract;

use contract::Backend;

/// Fresh databases in one cluster.
struct Postgres<'a> {
    cluster: &'a Cluster,
    next: AtomicU32,
}

fn client(at: &StoreLocation) -> postgres::Client {
    let StoreLocation::Postgres(url) = at else {
        unreachable!("the PostgreSQL backend makes PostgreSQL locations")
    };
    postgres::Client::connect(url.as_str(), postgres::NoTls).expect("connect directly")
}

impl Backend for Postgres<'_> {
    fn fresh(&self) -> StoreLocation {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        self.cluster.create_database(&format!("contract_{n}"))
    }

    fn exec(&self, at: &StoreLocation, sql: &str) {
        client(at).batch_execute(sql).expect(sql);
    }

    fn query_ints(&self, at: &StoreLocation, sql: &str) -> Vec<i64> {
        client(at)
            .query(&format!("SELECT x::bigint FROM ({sql}) AS q(x)"), &[])
            .expect(sql)
            .iter()
            .map(|row| row.get(0))
            .collect()
    }

    fn make_empty(&self, _at: &StoreLocation) {
        // A new database has no tables.
    }

    fn make_v1(&self, at: &StoreLocation) {
        self.exec(at, MIGRATIONS[0].postgres);
    }

    fn mark_version(&self, at: &StoreLocation, version: u32) {
        self.exec(
            at,
            &format!(
                "INSERT INTO schema_migrations (version, name, applied_ms)
                 VALUES ({version}, 'from a newer build', 0)"
            ),
        );
    }
}

fn cluster_or_skip() -> Option<Cluster> {
    match Cluster::start() {
        Ok(cluster) => Some(cluster),
        Err(skip) => {
            eprintln!("skipped: {skip}");
            None
        }
    }
}

macro_rules! behaviour_list {
    ($($behaviour:ident),* $(,)?) => {
        /// Every behaviour of the contract, by name.
        const BEHAVIOURS: &[(&str, fn(&dyn Backend))] =
            &[$((stringify!($behaviour), contract::$behaviour)),*];
    };
}

for_each_behaviour!(behaviour_list);

#[test]
fn postgres_keeps_the_store_contract() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let backend = Postgres {
        cluster: &cluster,
        next: AtomicU32::new(0),
    };
    let only = std::env::var("FORKMAIL_BEHAVIOUR").unwrap_or_default();
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, behaviour) in BEHAVIOURS.iter().filter(|(n, _)| n.contains(&*only)) {
        let started = Instant::now();
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| behaviour(&backend)));
        let ms = started.elapsed().as_millis();
        ran += 1;
        match outcome {
            Ok(()) => eprintln!("postgres: {name} ... ok ({ms} ms)"),
            Err(panic) => {
                let why = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("postgres: {name} ... FAILED ({ms} ms)");
                failed.push(format!("{name}: {why}"));
            }
        }
    }
    assert!(ran > 0, "FORKMAIL_BEHAVIOUR={only:?} matches no behaviour");
    assert!(
        failed.is_empty(),
        "{} of {ran} behaviours failed on PostgreSQL:\n{}",
        failed.len(),
        failed.join("\n")
    );
}

/// The cluster goes away under an open store and comes back: calls fail `Unavailable` while
/// it is gone, and the same `Store` works again afterwards without being reopened.
#[test]
fn a_store_survives_its_server_going_away_and_coming_back() {
    let Some(mut cluster) = cluster_or_skip() else {
        return;
    };
    let at = cluster.create_database("lost");
    let (mut store, id) = {
        let mut store = forkmail_store::create(&at).unwrap();
        for name in contract::USERS {
            store.add_user(&contract::user(name), 1).unwrap();
        }
        let id = store
            .send(
                "alice",
                &contract::draft(&["bob"], "before"),
                1,
                &SendLimits::NONE,
            )
            .unwrap();
        (store, id)
    };

    // Restarted between two requests: the next request reconnects by itself.
    cluster.stop();
    cluster.start_again();
    assert_eq!(store.read("bob", id).unwrap().title, "before");

    // Gone: every kind of call says so, and changes nothing.
    cluster.stop();
    let send = store.send(
        "alice",
        &contract::draft(&["bob"], "during"),
        2,
        &SendLimits::NONE,
    );
    assert!(
        matches!(&send, Err(StoreError::Unavailable(m)) if m.contains("cannot connect to")),
        "{send:?}"
    );
    assert!(send.unwrap_err().is_transient());
    for err in [
        store.find_user("bob").err(),
        store.record_nonce(b"n", 1, 2).err(),
        store.counts().err(),
    ] {
        assert!(matches!(err, Some(StoreError::Unavailable(_))), "{err:?}");
    }

    // Back: the same store object works again.
    cluster.start_again();
    assert!(store.record_nonce(b"n", 1, 2).unwrap());
    let after = store
        .send(
            "alice",
            &contract::draft(&["bob"], "after"),
            3,
            &SendLimits::NONE,
        )
        .unwrap();
    let titles: Vec<String> = contract::inbox(&mut *store, "bob")
        .into_iter()
        .map(|e| e.title)
        .collect();
    assert_eq!(
        titles,
        ["before", "after"],
        "nothing stored while it was gone"
    );
    assert!(after > id);

    // Restarted in the middle of a listing: the next page comes from a new connection, and
    // no page is repeated.
    let mut ids = Vec::new();
    store
        .inbox("bob", 1, &mut |entries, _| {
            if ids.is_empty() {
                cluster.stop();
                cluster.start_again();
            }
            ids.extend(entries.iter().map(|e| e.id));
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(ids, [id, after]);
    store.check_integrity().unwrap();
}

/// No server at the URL: `Unavailable`, naming the URL without its password.
#[test]
fn an_unreachable_server_is_unavailable_and_named_without_its_password() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let at = StoreLocation::parse(&format!(
        "postgresql://mail:s3cret@127.0.0.1:{port}/forkmail"
    ))
    .unwrap();
    for err in [
        forkmail_store::open(&at).err().unwrap(),
        forkmail_store::create(&at).err().unwrap(),
        forkmail_store::migrate(&at).err().unwrap(),
    ] {
        let text = err.to_string();
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(
            text.contains(&format!(
                "cannot connect to postgresql://mail@127.0.0.1:{port}/forkmail (password redacted)"
            )),
            "{text}"
        );
        assert!(!text.contains("s3cret"), "{text}");
    }
}

/// `Cluster::copy_database`, which the benchmark uses to copy deployments: the copy starts
/// with the original's schema and rows, and from then on each database keeps its own.
#[test]
fn a_copied_database_starts_equal_and_then_goes_its_own_way() {
    let Some(cluster) = cluster_or_skip() else {
        return;
    };
    let original_at = cluster.create_database("original");
    let id = {
        let mut store = forkmail_store::create(&original_at).unwrap();
        for name in contract::USERS {
            store.add_user(&contract::user(name), 1).unwrap();
        }
        store
            .send(
                "alice",
                &contract::draft(&["bob"], "before the copy"),
                1,
                &SendLimits::NONE,
            )
            .unwrap()
    };
    let copy_at = cluster.copy_database("original", "copy");
    let mut original = forkmail_store::open(&original_at).unwrap();
    let mut copy = forkmail_store::open(&copy_at).unwrap();
    assert_eq!(copy.read("bob", id).unwrap().title, "before the copy");
    assert_eq!(copy.counts().unwrap(), original.counts().unwrap());

    copy.send(
        "alice",
        &contract::draft(&["bob"], "only in the copy"),
        2,
        &SendLimits::NONE,
    )
    .unwrap();
    assert_eq!(contract::inbox(&mut *copy, "bob").len(), 2);
    assert_eq!(contract::inbox(&mut *original, "bob").len(), 1);
    copy.check_integrity().unwrap();
}
