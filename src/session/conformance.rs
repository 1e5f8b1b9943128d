//! What every session store must do with locks, as one check that runs against each: the
//! embedded store in its unit tests, Redis, PostgreSQL and MariaDB in tests/session_stores.rs.
//! It panics with the rule that failed.

use std::time::Duration;

use super::{Owner, SessionStore};

fn owner(node: &str, generation: u64, token: &str) -> Owner {
    Owner {
        node: node.into(),
        generation,
        token: token.into(),
    }
}

/// The lock rules on the existing session `id` (left unlocked afterwards).
pub async fn locks(s: &dyn SessionStore, id: &str) {
    let lease = Duration::from_secs(60);
    let a = owner("node-a", 100, "x");
    let a_sibling = owner("node-a", 100, "y");
    let a_restarted = owner("node-a", 200, "z");
    let b = owner("node-b", 999, "w");
    assert!(s.lock(id, &a, lease).await.unwrap(), "a free lock is taken");
    assert!(
        !s.lock(id, &a_sibling, lease).await.unwrap(),
        "another request of the same process waits"
    );
    assert!(!s.lock(id, &b, lease).await.unwrap(), "another node waits");
    assert!(s.lock(id, &a, lease).await.unwrap(), "the holder takes it again");
    assert!(s.renew(id, &a, lease).await.unwrap(), "the holder renews");
    assert!(!s.renew(id, &b, lease).await.unwrap(), "only the holder renews");
    s.unlock(id, &b).await.unwrap();
    assert!(!s.lock(id, &b, lease).await.unwrap(), "only the holder unlocks");
    assert!(
        s.lock(id, &a_restarted, lease).await.unwrap(),
        "a restarted node takes its own lock at once"
    );
    assert!(
        !s.renew(id, &a, lease).await.unwrap(),
        "the superseded holder can no longer renew"
    );
    assert!(!s.lock(id, &a, lease).await.unwrap(), "nor take it back");
    s.unlock(id, &a_restarted).await.unwrap();
    // A short lease runs out: while nobody took it, its holder may still renew it ...
    assert!(s.lock(id, &a, Duration::from_millis(50)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(
        s.renew(id, &a, Duration::from_millis(50)).await.unwrap(),
        "nobody took it meanwhile"
    );
    tokio::time::sleep(Duration::from_millis(150)).await;
    // ... but once another node took it over, the old holder cannot.
    assert!(s.lock(id, &b, lease).await.unwrap(), "an expired lease is taken over");
    assert!(
        !s.renew(id, &a, lease).await.unwrap(),
        "a holder whose lease was taken cannot renew"
    );
    s.unlock(id, &b).await.unwrap();
    // Released, a lock cannot be renewed either: a writer whose lock was taken and released
    // in between (a HEAD of the client's retry) must not write again.
    assert!(s.lock(id, &a, lease).await.unwrap());
    s.unlock(id, &a).await.unwrap();
    assert!(!s.renew(id, &a, lease).await.unwrap(), "a released lock is not renewed");
}
