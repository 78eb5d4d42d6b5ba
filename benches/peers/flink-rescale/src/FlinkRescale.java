import java.io.File;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.LongAdder;
import java.util.stream.Stream;

import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.state.ValueState;
import org.apache.flink.api.common.state.ValueStateDescriptor;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.java.functions.KeySelector;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.execution.ExecutionState;
import org.apache.flink.runtime.executiongraph.AccessExecutionGraph;
import org.apache.flink.runtime.executiongraph.AccessExecutionJobVertex;
import org.apache.flink.runtime.executiongraph.AccessExecutionVertex;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.jobgraph.SavepointRestoreSettings;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.KeyedProcessFunction;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;
import org.apache.flink.streaming.api.functions.source.legacy.RichParallelSourceFunction;
import org.apache.flink.util.Collector;

/**
 * Rescale of keyed RocksDB state on Apache Flink 2.3 (local MiniCluster in this JVM): N keys with a
 * {@code ValueState<Long>} each, written at parallelism P1, retained incremental checkpoint, then the
 * same job restored from that checkpoint at parallelism P2; the time until every keyed subtask has its
 * state restored is measured, then every key is looked up (missing keys counted).
 *
 * <p>Usage: {@code java -cp ... FlinkRescale N P1 P2 CKPT_MS CKPT_DIR INGEST_DB(true|false)
 * MANAGED_MEM(e.g. 1g) VERIFY_DELAY_MS}
 *
 * <p>Job (both phases): legacy parallel source (subtask i of p emits keys i, i+p, ... below N once,
 * then idles; unbounded, so checkpoints continue) -> keyBy(key) -> KeyedProcessFunction with
 * ValueState&lt;Long&gt; "v" -> DiscardingSink. Max parallelism 128. Uids "src", "store", "sink".
 *
 * <p>Phase 1 (load, P1): the function sets v = key. When all N keys are processed, the main thread
 * waits for a checkpoint triggered after that (a chk-K directory newer than every chk-* present at
 * that moment, with its _metadata), then cancels the job; the checkpoint is retained on cancel.
 *
 * <p>Phase 2 (restore, P2): the same job graph at P2 with {@code execution.state-recovery.path} =
 * that chk-K. {@code restore_s} = wall time from just before {@code MiniCluster.submitJob} until the
 * last keyed subtask's {@code open()} (Flink calls open() after initializeState, i.e. after the
 * RocksDB keyed backend is restored). The source emits nothing until all P2 keyed subtasks are open
 * plus VERIFY_DELAY_MS; then it emits every key 0..N-1 again and the function checks v == key
 * (verify pass, timed separately). Flink's view: per-subtask INITIALIZING -> RUNNING from the
 * execution graph, and the job's CREATED/INITIALIZING -> RUNNING timestamps.
 *
 * <p>Prints progress lines on stderr and one line {@code RESULT {...}} on stdout.
 */
public class FlinkRescale {

    // ---------------------------------------------------------------- measurement (one JVM)

    static final LongAdder PROCESSED = new LongAdder(); // phase 1: keys written
    static final LongAdder CHECKED = new LongAdder(); // phase 2: keys looked up
    static final LongAdder MISSING = new LongAdder(); // phase 2: no value
    static final LongAdder WRONG = new LongAdder(); // phase 2: value != key
    static final AtomicInteger OPENED = new AtomicInteger(); // keyed subtasks past open()
    static final AtomicLong LAST_OPEN_MS = new AtomicLong(Long.MIN_VALUE);
    static final AtomicLong FIRST_OPEN_MS = new AtomicLong(Long.MAX_VALUE);
    static final AtomicLong SRC_FIRST_MS = new AtomicLong(Long.MAX_VALUE); // first emitted record
    static final AtomicLong SRC_DONE = new AtomicLong(); // source subtasks finished emitting
    static final ConcurrentLinkedQueue<String> OPEN_LOG = new ConcurrentLinkedQueue<>();

    static void maxUpdate(AtomicLong a, long v) {
        long cur;
        while (v > (cur = a.get()) && !a.compareAndSet(cur, v)) {}
    }

    static void minUpdate(AtomicLong a, long v) {
        long cur;
        while (v < (cur = a.get()) && !a.compareAndSet(cur, v)) {}
    }

    static void resetCounters() {
        PROCESSED.reset();
        CHECKED.reset();
        MISSING.reset();
        WRONG.reset();
        OPENED.set(0);
        LAST_OPEN_MS.set(Long.MIN_VALUE);
        FIRST_OPEN_MS.set(Long.MAX_VALUE);
        SRC_FIRST_MS.set(Long.MAX_VALUE);
        SRC_DONE.set(0);
        OPEN_LOG.clear();
    }

    static void log(String s) {
        System.err.println(String.format(Locale.ROOT, "[flink-rescale %tT.%<tL] %s", System.currentTimeMillis(), s));
    }

    // ---------------------------------------------------------------- job

    /** Emits keys i, i+p, ... < n once (phase 2: only after every keyed subtask is open), then idles. */
    public static class KeySource extends RichParallelSourceFunction<Long> {
        final long n;
        final boolean verify;
        final int expectOpened;
        final long delayMs;
        volatile boolean running = true;

        KeySource(long n, boolean verify, int expectOpened, long delayMs) {
            this.n = n;
            this.verify = verify;
            this.expectOpened = expectOpened;
            this.delayMs = delayMs;
        }

        @Override
        public void run(SourceContext<Long> ctx) throws Exception {
            int i = getRuntimeContext().getTaskInfo().getIndexOfThisSubtask();
            int p = getRuntimeContext().getTaskInfo().getNumberOfParallelSubtasks();
            if (verify) {
                while (running && OPENED.get() < expectOpened) Thread.sleep(5);
                Thread.sleep(delayMs);
            }
            minUpdate(SRC_FIRST_MS, System.currentTimeMillis());
            long k = i;
            while (running && k < n) {
                synchronized (ctx.getCheckpointLock()) {
                    for (int b = 0; b < 1024 && k < n; b++, k += p) ctx.collect(k);
                }
            }
            SRC_DONE.incrementAndGet();
            while (running) Thread.sleep(50); // stay alive: unbounded, checkpoints keep being taken
        }

        @Override
        public void cancel() {
            running = false;
        }
    }

    public static class Key implements KeySelector<Long, Long> {
        @Override
        public Long getKey(Long v) {
            return v;
        }
    }

    /** Phase 1: v = key. Phase 2: checks v == key. open() time = this subtask's state is restored. */
    public static class Store extends KeyedProcessFunction<Long, Long, Long> {
        final boolean verify;
        transient ValueState<Long> v;

        Store(boolean verify) {
            this.verify = verify;
        }

        @Override
        public void open(OpenContext ctx) throws Exception {
            long now = System.currentTimeMillis();
            v = getRuntimeContext().getState(new ValueStateDescriptor<>("v", Types.LONG));
            OPEN_LOG.add(getRuntimeContext().getTaskInfo().getIndexOfThisSubtask() + ":" + now);
            minUpdate(FIRST_OPEN_MS, now);
            maxUpdate(LAST_OPEN_MS, now);
            OPENED.incrementAndGet();
        }

        @Override
        public void processElement(Long key, Context ctx, Collector<Long> out) throws Exception {
            if (!verify) {
                v.update(key);
                PROCESSED.increment();
            } else {
                Long x = v.value();
                if (x == null) MISSING.increment();
                else if (x.longValue() != key.longValue()) WRONG.increment();
                CHECKED.increment();
            }
        }
    }

    static JobGraph buildJob(Configuration conf, long n, int p, boolean verify, long delayMs, String restorePath) {
        Configuration c = new Configuration(conf);
        c.setString("parallelism.default", String.valueOf(p));
        if (restorePath != null) c.setString("execution.state-recovery.path", restorePath);
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(c);
        env.setParallelism(p);
        env.setMaxParallelism(128);
        env.addSource(new KeySource(n, verify, p, delayMs), "keys", Types.LONG).uid("src").name("keys")
                .keyBy(new Key(), Types.LONG)
                .process(new Store(verify), Types.LONG).uid("store").name("store")
                .sinkTo(new DiscardingSink<>()).uid("sink").name("discard");
        var sg = env.getStreamGraph();
        sg.setJobName(verify ? "rescale-restore-p" + p : "rescale-load-p" + p);
        if (restorePath != null) sg.setSavepointRestoreSettings(SavepointRestoreSettings.forPath(restorePath, false));
        return sg.getJobGraph();
    }

    // ---------------------------------------------------------------- helpers

    static int maxChk(Path jobDir) throws IOException {
        if (!Files.isDirectory(jobDir)) return -1;
        int m = -1;
        try (Stream<Path> s = Files.list(jobDir)) {
            for (Path q : (Iterable<Path>) s::iterator) {
                String f = q.getFileName().toString();
                if (f.startsWith("chk-")) m = Math.max(m, Integer.parseInt(f.substring(4)));
            }
        }
        return m;
    }

    static int completedChkAbove(Path jobDir, int above) throws IOException {
        if (!Files.isDirectory(jobDir)) return -1;
        int best = -1;
        try (Stream<Path> s = Files.list(jobDir)) {
            for (Path q : (Iterable<Path>) s::iterator) {
                String f = q.getFileName().toString();
                if (!f.startsWith("chk-")) continue;
                int k = Integer.parseInt(f.substring(4));
                if (k > above && Files.exists(q.resolve("_metadata"))) best = Math.max(best, k);
            }
        }
        return best;
    }

    static long[] du(Path dir) throws IOException {
        long[] r = new long[2]; // bytes, files
        if (!Files.exists(dir)) return r;
        try (Stream<Path> s = Files.walk(dir)) {
            s.filter(Files::isRegularFile).forEach(q -> {
                try {
                    r[0] += Files.size(q);
                    r[1]++;
                } catch (IOException ignored) {
                }
            });
        }
        return r;
    }

    static void checkAlive(MiniCluster mc, JobID id) throws Exception {
        JobStatus s = mc.getJobStatus(id).get();
        if (s.isGloballyTerminalState() || s == JobStatus.FAILING || s == JobStatus.RESTARTING)
            throw new IllegalStateException("job " + id + " is " + s + " (see the log)");
    }

    static void cancel(MiniCluster mc, JobID id) throws Exception {
        mc.cancelJob(id).get();
        mc.requestJobResult(id).get(5, TimeUnit.MINUTES);
    }

    // ---------------------------------------------------------------- main

    public static void main(String[] args) throws Exception {
        long n = args.length > 0 ? Long.parseLong(args[0]) : 10_000_000L;
        int p1 = args.length > 1 ? Integer.parseInt(args[1]) : 2;
        int p2 = args.length > 2 ? Integer.parseInt(args[2]) : 3;
        long ckptMs = args.length > 3 ? Long.parseLong(args[3]) : 1000;
        String ckptDir = args.length > 4 ? args[4] : "/tmp/flink-rescale-ckpt";
        boolean ingest = args.length > 5 && Boolean.parseBoolean(args[5]);
        String managed = args.length > 6 ? args[6] : "1g";
        long delayMs = args.length > 7 ? Long.parseLong(args[7]) : 1000;

        Configuration conf = new Configuration();
        conf.setString("state.backend.type", "rocksdb");
        conf.setString("execution.checkpointing.incremental", "true");
        conf.setString("execution.checkpointing.storage", "filesystem");
        conf.setString("execution.checkpointing.dir", "file://" + ckptDir);
        conf.setString("execution.checkpointing.interval", ckptMs + " ms");
        conf.setString("execution.checkpointing.mode", "EXACTLY_ONCE");
        conf.setString("execution.checkpointing.unaligned.enabled", "false");
        conf.setString("execution.checkpointing.externalized-checkpoint-retention", "RETAIN_ON_CANCELLATION");
        conf.setString("execution.checkpointing.tolerable-failed-checkpoints", "1000");
        conf.setString("state.backend.rocksdb.use-ingest-db-restore-mode", String.valueOf(ingest));
        conf.setString("pipeline.max-parallelism", "128");
        conf.setString("pipeline.generic-types", "false");
        conf.setString("pipeline.object-reuse", "true");
        conf.setString("restart-strategy.type", "none"); // a failure must not re-run the job silently
        conf.setString("taskmanager.memory.managed.size", managed);

        int slots = Math.max(p1, p2);
        MiniCluster mc = new MiniCluster(new MiniClusterConfiguration.Builder().setConfiguration(conf)
                .setNumTaskManagers(1).setNumSlotsPerTaskManager(slots).build());
        mc.start();
        log("MiniCluster started: 1 TM x " + slots + " slots, managed memory " + managed);

        // ---------------- phase 1: load at p1, wait for a checkpoint after the last key, cancel
        resetCounters();
        JobGraph g1 = buildJob(conf, n, p1, false, 0, null);
        long t1 = System.currentTimeMillis();
        JobID j1 = mc.submitJob(g1).get().getJobID();
        Path jobDir1 = Paths.get(ckptDir, j1.toString());
        log("phase 1: job " + j1 + " at p=" + p1 + " loading " + n + " keys");
        long lastLog = t1;
        while (PROCESSED.sum() < n) {
            Thread.sleep(50);
            long now = System.currentTimeMillis();
            if (now - lastLog > 10_000) {
                checkAlive(mc, j1);
                log("phase 1: " + PROCESSED.sum() + " keys written, newest chk " + maxChk(jobDir1));
                lastLog = now;
            }
        }
        long tLoaded = System.currentTimeMillis();
        int before = maxChk(jobDir1);
        double loadSecs = (tLoaded - Math.max(t1, SRC_FIRST_MS.get())) / 1e3;
        log(String.format(Locale.ROOT, "phase 1: all %d keys written in %.1f s; waiting for a checkpoint > chk-%d", n,
                loadSecs, before));
        int chk;
        while ((chk = completedChkAbove(jobDir1, before)) < 0) {
            Thread.sleep(50);
            if (System.currentTimeMillis() - tLoaded > 30 * 60_000L) throw new IllegalStateException("no checkpoint");
            checkAlive(mc, j1);
        }
        long tChk = System.currentTimeMillis();
        cancel(mc, j1);
        Thread.sleep(1000); // let subsumed-checkpoint cleanup finish before measuring the directory
        Path chkPath = jobDir1.resolve("chk-" + chk);
        long[] jobDirSize = du(jobDir1);
        long[] sharedSize = du(jobDir1.resolve("shared"));
        log(String.format(Locale.ROOT, "phase 1: chk-%d complete %.1f s after load; job cancelled; job dir %d bytes in %d files"
                + " (shared/ %d bytes)", chk, (tChk - tLoaded) / 1e3, jobDirSize[0], jobDirSize[1], sharedSize[0]));

        // ---------------- phase 2: restore at p2
        resetCounters();
        JobGraph g2 = buildJob(conf, n, p2, true, delayMs, chkPath.toUri().toString());
        long t0 = System.currentTimeMillis();
        JobID j2 = mc.submitJob(g2).get().getJobID();
        long tSubmitted = System.currentTimeMillis();
        log("phase 2: job " + j2 + " at p=" + p2 + " restoring from " + chkPath);
        while (OPENED.get() < p2) {
            Thread.sleep(2);
            if (System.currentTimeMillis() - t0 > 30 * 60_000L) throw new IllegalStateException("restore too slow");
            if (System.currentTimeMillis() % 1000 < 3) checkAlive(mc, j2);
        }
        long tReady = LAST_OPEN_MS.get();
        double restoreSecs = (tReady - t0) / 1e3;
        log(String.format(Locale.ROOT, "phase 2: all %d keyed subtasks open %.3f s after submit (opens: %s)", p2,
                restoreSecs, OPEN_LOG));

        // wait for all tasks RUNNING (Flink's view)
        AccessExecutionGraph eg = null;
        long deadline = System.currentTimeMillis() + 120_000;
        while (System.currentTimeMillis() < deadline) {
            eg = mc.getExecutionGraph(j2).get();
            boolean all = true;
            for (AccessExecutionVertex v : eg.getAllExecutionVertices())
                if (v.getStateTimestamp(ExecutionState.RUNNING) == 0) all = false;
            if (all) break;
            Thread.sleep(20);
        }
        long maxRunning = 0;
        List<String> subtasks = new ArrayList<>();
        double keyedInitMax = 0;
        for (AccessExecutionJobVertex jv : eg.getVerticesTopologically()) {
            for (AccessExecutionVertex v : jv.getTaskVertices()) {
                long init = v.getStateTimestamp(ExecutionState.INITIALIZING);
                long run = v.getStateTimestamp(ExecutionState.RUNNING);
                long dep = v.getStateTimestamp(ExecutionState.DEPLOYING);
                maxRunning = Math.max(maxRunning, run);
                if (jv.getName().contains("store")) keyedInitMax = Math.max(keyedInitMax, (run - init) / 1e3);
                subtasks.add(String.format(Locale.ROOT,
                        "{\"task\":\"%s\",\"deploying_s\":%.3f,\"initializing_s\":%.3f,\"running_s\":%.3f,\"init_to_running_s\":%.3f}",
                        v.getTaskNameWithSubtaskIndex().replace("\"", "'"), (dep - t0) / 1e3, (init - t0) / 1e3,
                        (run - t0) / 1e3, (run - init) / 1e3));
            }
        }
        double submitToRunning = (maxRunning - t0) / 1e3;
        long jobCreated = eg.getStatusTimestamp(JobStatus.CREATED);
        long jobRunning = eg.getStatusTimestamp(JobStatus.RUNNING);
        log(String.format(Locale.ROOT, "phase 2: all tasks RUNNING %.3f s after submit; subtasks %s", submitToRunning,
                subtasks));

        // verify: every key present with v == key
        long lastCount = -1, lastChange = System.currentTimeMillis();
        while (CHECKED.sum() < n) {
            Thread.sleep(50);
            long c = CHECKED.sum(), now = System.currentTimeMillis();
            if (c != lastCount) {
                lastCount = c;
                lastChange = now;
            } else if (now - lastChange > 120_000) {
                throw new IllegalStateException("verification stalled at " + c + " keys");
            }
        }
        long tVerified = System.currentTimeMillis();
        double verifySecs = (tVerified - SRC_FIRST_MS.get()) / 1e3;
        log(String.format(Locale.ROOT, "phase 2: %d keys looked up in %.1f s: %d missing, %d wrong", CHECKED.sum(),
                verifySecs, MISSING.sum(), WRONG.sum()));
        cancel(mc, j2);
        mc.close();

        System.out.println("RESULT " + String.format(Locale.ROOT,
                "{\"bench\":\"flink-rescale\",\"flink\":\"2.3.0\",\"keys\":%d,\"from_p\":%d,\"to_p\":%d,\"max_parallelism\":128,"
                        + "\"ingest_db_restore_mode\":%b,\"managed_memory\":\"%s\",\"checkpoint\":\"%s\","
                        + "\"checkpoint_bytes\":%d,\"checkpoint_files\":%d,\"checkpoint_shared_bytes\":%d,"
                        + "\"load_s\":%.3f,\"restore_s\":%.3f,\"first_keyed_open_s\":%.3f,\"submit_call_s\":%.3f,"
                        + "\"submit_to_running_s\":%.3f,\"keyed_init_to_running_max_s\":%.3f,\"job_created_to_running_s\":%.3f,"
                        + "\"verify_s\":%.3f,\"checked_keys\":%d,\"missing_keys\":%d,\"wrong_values\":%d,\"subtasks\":[%s]}",
                n, p1, p2, ingest, managed, chkPath, jobDirSize[0], jobDirSize[1], sharedSize[0], loadSecs, restoreSecs,
                (FIRST_OPEN_MS.get() - t0) / 1e3, (tSubmitted - t0) / 1e3, submitToRunning, keyedInitMax,
                (jobRunning - jobCreated) / 1e3, verifySecs, CHECKED.sum(), MISSING.sum(), WRONG.sum(),
                String.join(",", subtasks)));
        System.out.flush();
        System.exit(0);
    }
}
