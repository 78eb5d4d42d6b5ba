//! The invariants of the module doc, each on a real RocksDB instance in a
//! temporary directory. The snapshot thread is played by the test: it runs
//! a barrier's background part (or a write-behind slice) when the test
//! says, so the tests can look at the stage while state work is in flight.

use super::evict::evictable;
use super::write_behind::SlicePolicy;
use super::*;
use crate::checkpoint::manifest::SubtaskState;
use crate::checkpoint::store::CheckpointStore;
use crate::state::StateEnv;
use crate::task::chain::AsyncPart;
use std::sync::Mutex;
use weir_operators::{decode_value, encode_state_key, OperatorError};

const MAX_PARALLELISM: u16 = 128;
const KEY_GROUPS: (u16, u16) = (0, MAX_PARALLELISM);

/// Records are `(key, amount)`; outputs `(key, running sum)`.
type Record = (u64, u64);

/// Keeps the sum of each key's amounts and emits it.
struct Sum;

impl KeyedProcess<u64, Record, Record> for Sum {
    type State = u64;

    fn process(
        &mut self,
        key: &u64,
        state: &mut Option<u64>,
        record: Record,
        ctx: &mut KeyedContext<'_, Record>,
    ) -> std::result::Result<(), OperatorError> {
        let sum = state.get_or_insert(0);
        *sum += record.1;
        ctx.emit((*key, *sum));
        Ok(())
    }
}

/// Refuses a record whose amount it has seen before (kept in a map state);
/// on a state failure it returns an error of its own, as user code does.
struct MapLookup;

impl KeyedProcess<u64, Record, Record> for MapLookup {
    type State = u64;

    fn process(
        &mut self,
        key: &u64,
        _state: &mut Option<u64>,
        record: Record,
        ctx: &mut KeyedContext<'_, Record>,
    ) -> std::result::Result<(), OperatorError> {
        let seen: Option<u64> = ctx
            .map("seen")
            .get(&record.1)
            .map_err(|e| OperatorError(format!("cannot look up {}: {e}", record.1)))?;
        match seen {
            Some(_) => Err(OperatorError("seen twice".into())),
            None => {
                ctx.map("seen").insert(&record.1, &1u64)?;
                ctx.emit((*key, record.1));
                Ok(())
            }
        }
    }
}

/// The end of the chain: keeps what the stage emits.
struct Collect(Arc<Mutex<Vec<Record>>>);

impl Downstream<Record> for Collect {
    fn records(&mut self, batch: &mut Vec<Record>) -> Result<()> {
        self.0.lock().unwrap().append(batch);
        Ok(())
    }
    fn watermark(&mut self, _watermark: Timestamp) -> Result<()> {
        Ok(())
    }
    fn idle(&mut self) -> Result<()> {
        Ok(())
    }
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    fn barrier(&mut self, _barrier: Barrier, _snap: &mut SnapshotBuilder) -> Result<()> {
        Ok(())
    }
    fn checkpoint_complete(&mut self, _id: CheckpointId) -> Result<()> {
        Ok(())
    }
    fn end(&mut self) -> Result<()> {
        Ok(())
    }
    fn latency_marker(&mut self, _emitted: std::time::Instant) -> Result<()> {
        Ok(())
    }
}

type Stage<P> = KeyedStage<u64, Record, Record, P, fn(&Record) -> u64>;

/// A job's state environment in a temporary directory.
struct Harness {
    _dir: tempfile::TempDir,
    env: StateEnv,
    /// What the stages emitted.
    out: Arc<Mutex<Vec<Record>>>,
    /// The task's snapshot thread, played by the test.
    jobs: crossbeam_channel::Receiver<SnapshotJob>,
    jobs_tx: crossbeam_channel::Sender<SnapshotJob>,
}

impl Harness {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path(), "job").unwrap();
        let env = StateEnv::new(store, dir.path().join("local"), 8 << 20, 8 << 20).unwrap();
        let (jobs_tx, jobs) = crossbeam_channel::unbounded();
        Harness {
            _dir: dir,
            env,
            out: Default::default(),
            jobs,
            jobs_tx,
        }
    }

    fn open(&self) -> Arc<RocksInstance> {
        RocksInstance::open(&self.env, "sum-0", KEY_GROUPS, MAX_PARALLELISM, &[]).unwrap()
    }

    /// A stage of `function` on `db` with a cache of `capacity` entries and
    /// no write-behind.
    fn stage<P: KeyedProcess<u64, Record, Record>>(
        &self,
        function: P,
        db: Arc<RocksInstance>,
        capacity: usize,
    ) -> Stage<P> {
        let config = KeyedStageConfig {
            name: "sum[0]".into(),
            uid: "sum".into(),
            subtask: 0,
            max_parallelism: MAX_PARALLELISM,
            cache_entries: capacity,
            write_behind_entries: 0,
            checkpoint_interval_ms: None,
            stats: Default::default(),
        };
        let next = Box::new(Collect(self.out.clone()));
        let key_of: fn(&Record) -> u64 = |r| r.0;
        KeyedStage::new(function, key_of, config, self.jobs_tx.clone(), db, next).unwrap()
    }

    /// `key`'s value state in the snapshot `state`, read from an instance
    /// restored from it.
    fn restored(&self, state: &SubtaskState, key: u64) -> Option<u64> {
        let SubtaskState::Rocks(handle) = state else {
            panic!("keyed state is a RocksDB handle")
        };
        let db = RocksInstance::open(&self.env, "restored-0", KEY_GROUPS, MAX_PARALLELISM, &[handle]).unwrap();
        let mut k = Vec::new();
        encode_state_key(&key, b"", MAX_PARALLELISM, &mut k);
        let bytes = db.get(&k).unwrap();
        bytes.map(|v| decode_value(&v).unwrap())
    }
}

/// Passes barrier `id` and returns its background part (to run as the
/// snapshot thread would).
fn barrier<P: KeyedProcess<u64, Record, Record>>(stage: &mut Stage<P>, id: u64) -> Result<AsyncPart> {
    let mut snap = SnapshotBuilder {
        id: CheckpointId(id),
        ready: Vec::new(),
        pending: Vec::new(),
    };
    stage.barrier(
        Barrier {
            id: CheckpointId(id),
            then_stop: false,
        },
        &mut snap,
    )?;
    Ok(snap.pending.pop().unwrap().2)
}

fn records<P: KeyedProcess<u64, Record, Record>>(stage: &mut Stage<P>, records: &[Record]) -> Result<()> {
    stage.records(&mut records.to_vec())
}

#[test]
fn a_write_after_the_barrier_does_not_leak_into_its_snapshot() {
    let h = Harness::new();
    let mut stage = h.stage(Sum, h.open(), 1000);
    records(&mut stage, &[(1, 1), (2, 5)]).unwrap();
    let first = barrier(&mut stage, 1).unwrap();
    // Before the capture has looked at any slot: copy-on-write must keep 1.
    assert!(stage.capture.as_ref().is_some_and(|c| c.next_slot == 0));
    records(&mut stage, &[(1, 10)]).unwrap();
    stage.flush().unwrap();
    assert!(stage.capture.is_none(), "a flush finishes a small cache's capture");
    let first = first().unwrap();
    assert_eq!(h.restored(&first, 1), Some(1), "the value at the barrier");
    assert_eq!(h.restored(&first, 2), Some(5));
    let second = barrier(&mut stage, 2).unwrap();
    stage.flush().unwrap();
    let second = second().unwrap();
    assert_eq!(
        h.restored(&second, 1),
        Some(11),
        "the later write is the next snapshot's"
    );
    assert_eq!(h.restored(&second, 2), Some(5));
}

#[test]
fn nothing_is_evicted_before_its_epoch_is_durable() {
    let h = Harness::new();
    let mut stage = h.stage(Sum, h.open(), 8);
    let first: Vec<Record> = (0..8).map(|k| (k, k + 1)).collect();
    records(&mut stage, &first).unwrap();
    let part = barrier(&mut stage, 1).unwrap();
    stage.flush().unwrap();
    // Over capacity (within the 25 % left to state work in flight) while
    // the barrier's snapshot has not run: every entry is still needed.
    records(&mut stage, &[(100, 1), (101, 1)]).unwrap();
    assert_eq!(stage.cache.len(), 10);
    for k in (0..8).chain([100, 101]) {
        assert!(
            stage.cache.get_mut(&k).is_some(),
            "key {k} evicted before its epoch is durable"
        );
    }
    part().unwrap();
    assert_eq!(stage.durable_epoch.load(Ordering::Acquire), 1);
    records(&mut stage, &[(100, 1)]).unwrap();
    assert!(stage.cache.len() <= 8, "durable now: the cache is bounded again");
    // Evicted or not, every key reads back its sum.
    h.out.lock().unwrap().clear();
    let again: Vec<Record> = (0..8).chain([100, 101]).map(|k| (k, 0)).collect();
    records(&mut stage, &again).unwrap();
    let sums: Vec<Record> = h.out.lock().unwrap().clone();
    let expected: Vec<Record> = (0..8).map(|k| (k, k + 1)).chain([(100, 2), (101, 1)]).collect();
    assert_eq!(sums, expected);
}

#[test]
fn an_entry_changed_again_after_its_take_waits_for_the_next_epoch() {
    let h = Harness::new();
    let mut stage = h.stage(Sum, h.open(), 1000);
    records(&mut stage, &[(1, 1), (2, 1)]).unwrap();
    let part = barrier(&mut stage, 1).unwrap();
    stage.flush().unwrap();
    part().unwrap();
    records(&mut stage, &[(1, 1)]).unwrap();
    let durable = stage.durable_epoch.load(Ordering::Acquire);
    assert!(evictable(stage.cache.get_mut(&2).unwrap(), durable));
    assert!(!evictable(stage.cache.get_mut(&1).unwrap(), durable));
}

#[test]
fn a_failed_write_behind_fails_the_next_barrier() {
    let h = Harness::new();
    let db = h.open();
    let mut stage = h.stage(Sum, db.clone(), 1 << 20);
    // Slices of one entry or more, the first due at once.
    stage.write_behind.policy = SlicePolicy::new(1, Some(1), 0);
    // Enough keys for the slice to go into an SST, whose path is taken.
    let many: Vec<Record> = (0..encode::INGEST_AT_LEAST as u64 + 10).map(|k| (k, 1)).collect();
    std::fs::create_dir_all(db.dir.join("ingest-0.sst")).unwrap();
    records(&mut stage, &many).unwrap();
    stage.flush().unwrap();
    let Ok(SnapshotJob::Background(slice)) = h.jobs.try_recv() else {
        panic!("a write-behind slice was handed to the snapshot thread")
    };
    slice();
    let err = match barrier(&mut stage, 1) {
        Err(e) => e,
        Ok(_) => panic!("the barrier after a failed write-behind must fail"),
    };
    assert!(matches!(err, WeirError::State { .. }), "{err:?}");
    assert!(err.is_retryable(), "the job restarts from its last checkpoint");
    assert!(records(&mut stage, &[(1, 1)]).is_err(), "records fail too");
}

#[test]
fn a_failed_snapshot_fails_the_next_barrier() {
    let h = Harness::new();
    let mut stage = h.stage(Sum, h.open(), 1000);
    records(&mut stage, &[(1, 1)]).unwrap();
    let part = barrier(&mut stage, 1).unwrap();
    stage.flush().unwrap();
    // The store's shared directory is not a directory: the upload fails.
    let shared = h.env.store.job_dir().join("shared");
    std::fs::remove_dir_all(&shared).unwrap();
    std::fs::write(&shared, b"not a directory").unwrap();
    assert!(part().is_err());
    let err = match barrier(&mut stage, 2) {
        Err(e) => e,
        Ok(_) => panic!("the barrier after a failed snapshot must fail"),
    };
    assert!(matches!(err, WeirError::State { .. }) && err.is_retryable(), "{err:?}");
}

#[test]
fn epoch_rebase_keeps_changes_in_order_and_taken_entries_evictable() {
    let h = Harness::new();
    let mut stage = h.stage(Sum, h.open(), 1000);
    stage.epoch = u32::MAX - 1;
    records(&mut stage, &[(1, 1)]).unwrap();
    let part = barrier(&mut stage, 1).unwrap();
    stage.flush().unwrap();
    part().unwrap();
    assert_eq!(stage.epoch, u32::MAX);
    records(&mut stage, &[(1, 2), (2, 3)]).unwrap();
    // This barrier's epoch would wrap: the stage renumbers first.
    let part = barrier(&mut stage, 2).unwrap();
    assert_eq!(
        stage.epoch,
        CLEAN + 2,
        "the renumbered epoch was taken, the next is current"
    );
    records(&mut stage, &[(1, 4)]).unwrap();
    stage.flush().unwrap();
    let second = part().unwrap();
    assert_eq!(
        h.restored(&second, 1),
        Some(3),
        "changes before the rebase are in its barrier"
    );
    assert_eq!(h.restored(&second, 2), Some(3));
    let durable = stage.durable_epoch.load(Ordering::Acquire);
    assert_eq!(durable, CLEAN + 1);
    assert!(evictable(stage.cache.get_mut(&2).unwrap(), durable));
    assert!(
        !evictable(stage.cache.get_mut(&1).unwrap(), durable),
        "changed after the rebase"
    );
    let part = barrier(&mut stage, 3).unwrap();
    stage.flush().unwrap();
    let third = part().unwrap();
    assert_eq!(
        h.restored(&third, 1),
        Some(7),
        "the change after the rebase is in the next"
    );
    assert_eq!(stage.durable_epoch.load(Ordering::Acquire), CLEAN + 2);
}

#[test]
fn a_state_error_under_user_code_stays_a_retryable_state_error() {
    let h = Harness::new();
    let mut db = h.open();
    // A map-state read that fails in RocksInstance: its column family is gone.
    Arc::get_mut(&mut db).unwrap().db.drop_cf("map").unwrap();
    let mut stage = h.stage(MapLookup, db, 1000);
    let err = records(&mut stage, &[(1, 7)]).unwrap_err();
    assert!(matches!(err, WeirError::State { .. }), "{err:?}");
    assert!(err.is_retryable());
}

#[test]
fn an_error_of_user_code_alone_stays_an_operator_error() {
    let h = Harness::new();
    let mut stage = h.stage(MapLookup, h.open(), 1000);
    records(&mut stage, &[(1, 7)]).unwrap();
    let err = records(&mut stage, &[(1, 7)]).unwrap_err();
    assert!(matches!(err, WeirError::Operator { .. }), "{err:?}");
    assert!(!err.is_retryable());
}

/// Sums like [`Sum`] and registers an event-time timer per key (at its
/// first amount), so timers move with their keys too.
struct SumWithTimer;

impl KeyedProcess<u64, Record, Record> for SumWithTimer {
    type State = u64;

    fn process(
        &mut self,
        key: &u64,
        state: &mut Option<u64>,
        record: Record,
        ctx: &mut KeyedContext<'_, Record>,
    ) -> std::result::Result<(), OperatorError> {
        let sum = state.get_or_insert(0);
        *sum += record.1;
        ctx.register_event_timer(Timestamp(record.1 as i64), b"t");
        ctx.emit((*key, *sum));
        Ok(())
    }
}

/// The snapshot of `db` (through a stage with nothing new), as a handle.
fn snapshot_of(h: &Harness, db: Arc<RocksInstance>, id: u64) -> crate::checkpoint::manifest::RocksHandle {
    let mut stage = h.stage(SumWithTimer, db, 1000);
    let part = barrier(&mut stage, id).unwrap();
    stage.flush().unwrap();
    match part().unwrap() {
        SubtaskState::Rocks(handle) => handle,
        _ => panic!("keyed state is a RocksDB handle"),
    }
}

/// Each key, the key group it is stored under and its value.
type Values = Vec<(u64, u16, Option<u64>)>;

/// Every key's value and the key group it is stored under, and the number
/// of event timers per key group, in `db`.
fn contents(db: &RocksInstance, keys: &[u64]) -> (Values, std::collections::BTreeMap<u16, usize>) {
    let mut values = Vec::new();
    for key in keys {
        let mut k = Vec::new();
        let group = encode_state_key(key, b"", MAX_PARALLELISM, &mut k).0;
        values.push((*key, group, db.get(&k).unwrap().map(|v| decode_value(&v).unwrap())));
    }
    let mut timers = std::collections::BTreeMap::new();
    for (_, timer) in db.timers(crate::state::TimeDomain::Event).unwrap() {
        let group = weir_operators::key_group_of(crate::state::timers::key_of(&timer), MAX_PARALLELISM).0;
        *timers.entry(group).or_default() += 1;
    }
    (values, timers)
}

#[test]
fn keyed_state_and_timers_move_by_key_group_when_the_parallelism_changes() {
    let h = Harness::new();
    let keys: Vec<u64> = (0..300).collect();
    let mut stage = h.stage(SumWithTimer, h.open(), 1000);
    records(&mut stage, &keys.iter().map(|k| (*k, *k + 1)).collect::<Vec<_>>()).unwrap();
    let part = barrier(&mut stage, 1).unwrap();
    stage.flush().unwrap();
    let SubtaskState::Rocks(one) = part().unwrap() else {
        panic!("keyed state is a RocksDB handle")
    };
    // Parallelism 1 -> 3: each subtask keeps exactly its key groups.
    let ranges = [(0u16, 43u16), (43, 86), (86, 128)];
    let mut three = Vec::new();
    let mut timers_seen = 0;
    for (i, range) in ranges.iter().enumerate() {
        let db = RocksInstance::open(&h.env, &format!("three-{i}"), *range, MAX_PARALLELISM, &[&one]).unwrap();
        let (values, timers) = contents(&db, &keys);
        for (key, group, value) in values {
            let mine = (range.0..range.1).contains(&group);
            assert_eq!(value, mine.then_some(key + 1), "key {key} (group {group}) in {range:?}");
        }
        assert!(
            timers.keys().all(|g| (range.0..range.1).contains(g)),
            "{timers:?} in {range:?}"
        );
        timers_seen += timers.values().sum::<usize>();
        three.push(db);
    }
    assert_eq!(timers_seen, keys.len(), "every timer lands in exactly one subtask");
    // 3 -> 2: ranges that straddle the old ones are merged from two instances each.
    let handles: Vec<_> = three
        .into_iter()
        .enumerate()
        .map(|(i, db)| snapshot_of(&h, db, 2 + i as u64))
        .collect();
    let refs: Vec<&_> = handles.iter().collect();
    let mut timers_seen = 0;
    for (i, range) in [(0u16, 64u16), (64, 128)].iter().enumerate() {
        let db = RocksInstance::open(&h.env, &format!("two-{i}"), *range, MAX_PARALLELISM, &refs).unwrap();
        let (values, timers) = contents(&db, &keys);
        for (key, group, value) in values {
            let mine = (range.0..range.1).contains(&group);
            assert_eq!(value, mine.then_some(key + 1), "key {key} (group {group}) in {range:?}");
        }
        assert!(
            timers.keys().all(|g| (range.0..range.1).contains(g)),
            "{timers:?} in {range:?}"
        );
        timers_seen += timers.values().sum::<usize>();
    }
    assert_eq!(timers_seen, keys.len());
}
