package weir.peers;

import java.io.File;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.stream.Stream;
import java.nio.ByteBuffer;
import java.time.Duration;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.Set;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import java.util.stream.Collectors;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.ListOffsetsResult;
import org.apache.kafka.clients.admin.OffsetSpec;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.OffsetAndMetadata;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.Deserializer;
import org.apache.kafka.common.serialization.Serde;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.common.serialization.Serializer;
import org.apache.kafka.streams.CloseOptions;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.KeyValue;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.Topology;
import org.apache.kafka.streams.errors.StreamsUncaughtExceptionHandler;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Named;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.kstream.Repartitioned;
import org.apache.kafka.streams.processor.api.Processor;
import org.apache.kafka.streams.processor.api.ProcessorContext;
import org.apache.kafka.streams.processor.api.Record;
import org.apache.kafka.streams.state.KeyValueStore;
import org.apache.kafka.streams.state.Stores;

/**
 * The Kafka Streams peer of {@code weir run kafka-count}: topic {@code --input} with values
 * {@code id,key,value} (no Kafka key) -> re-keyed by {@code key} (a repartition topic) -> running
 * count and sum per key in a persistent (RocksDB) key-value store -> one record per input record
 * on {@code --output}, value {@code id,key,count,sum}, no key; {@code exactly_once_v2}.
 *
 * <p>It stops once {@code --records} records went through the count: it closes the instance (a
 * clean close commits the open transaction and the input offsets) and prints one JSON line on
 * stdout. Everything else goes to stderr.
 */
public final class KafkaStreamsCount {
  static final String STORE = "count-sum";

  /** Two longs as 16 big-endian bytes: {@code (id, value)} on the repartition topic, {@code (count, sum)} in the store. */
  static final class PairSerde implements Serde<long[]>, Serializer<long[]>, Deserializer<long[]> {
    @Override
    public byte[] serialize(String topic, long[] v) {
      if (v == null) return null;
      return ByteBuffer.allocate(16).putLong(v[0]).putLong(v[1]).array();
    }

    @Override
    public long[] deserialize(String topic, byte[] b) {
      if (b == null) return null;
      ByteBuffer buf = ByteBuffer.wrap(b);
      return new long[] {buf.getLong(), buf.getLong()};
    }

    @Override
    public Serializer<long[]> serializer() {
      return this;
    }

    @Override
    public Deserializer<long[]> deserializer() {
      return this;
    }

    @Override
    public void close() {}

    @Override
    public void configure(Map<String, ?> configs, boolean isKey) {}
  }

  static final PairSerde PAIR = new PairSerde();

  /**
   * {@code id,key,value} as weir's {@code parse_input}: exactly three fields, each trimmed and an
   * unsigned 64-bit integer (a leading {@code +} is accepted by both); anything else fails the
   * job (weir's default bad-record policy fails too).
   */
  static KeyValue<Long, long[]> parse(String text) {
    String[] f = text == null ? new String[0] : text.split(",", -1);
    try {
      if (f.length == 3) {
        long id = Long.parseUnsignedLong(f[0].strip());
        long key = Long.parseUnsignedLong(f[1].strip());
        long value = Long.parseUnsignedLong(f[2].strip());
        return KeyValue.pair(key, new long[] {id, value});
      }
    } catch (NumberFormatException e) {
      // below
    }
    throw new IllegalArgumentException("expected `id,key,value` (integers), got \"" + text + "\"");
  }

  /** Records through the count so far (all threads), and the latch released at the N-th. */
  static final class Progress {
    final long target;
    final AtomicLong processed = new AtomicLong();
    final AtomicLong firstNanos = new AtomicLong();
    final CountDownLatch done = new CountDownLatch(1);
    volatile long doneNanos;

    Progress(long target) {
      this.target = target;
    }

    void record() {
      long n = processed.incrementAndGet();
      if (n == 1) firstNanos.compareAndSet(0, System.nanoTime());
      if (n == target) {
        doneNanos = System.nanoTime();
        done.countDown();
      }
    }
  }

  /** Running count and sum of the record's key (RunningCountSum in weir's workloads/src/jobs.rs). */
  static final class CountSum implements Processor<Long, long[], Void, String> {
    private final Progress progress;
    private ProcessorContext<Void, String> context;
    private KeyValueStore<Long, long[]> store;

    CountSum(Progress progress) {
      this.progress = progress;
    }

    @Override
    public void init(ProcessorContext<Void, String> context) {
      this.context = context;
      this.store = context.getStateStore(STORE);
    }

    @Override
    public void process(Record<Long, long[]> r) {
      long key = r.key();
      long[] s = store.get(key);
      if (s == null) s = new long[2];
      s[0] += 1;
      s[1] += r.value()[1]; // wraps as weir's u64 in release builds
      store.put(key, s);
      String line = Long.toUnsignedString(r.value()[0]) + ',' + Long.toUnsignedString(key) + ','
          + Long.toUnsignedString(s[0]) + ',' + Long.toUnsignedString(s[1]);
      context.forward(r.<Void>withKey(null).withValue(line));
      progress.record();
    }
  }

  static Topology topology(String input, String output, Progress progress) {
    StreamsBuilder b = new StreamsBuilder();
    // Stores.keyValueStoreBuilder has caching off unless asked: every put reaches RocksDB and
    // its changelog, every record is forwarded at once.
    b.addStateStore(Stores.keyValueStoreBuilder(Stores.persistentKeyValueStore(STORE), Serdes.Long(), PAIR));
    b.stream(input, Consumed.with(Serdes.ByteArray(), Serdes.String()).withName("kafka-in"))
        .map((k, v) -> parse(v), Named.as("parse"))
        .repartition(Repartitioned.with(Serdes.Long(), PAIR).withName("by-key"))
        .process(() -> new CountSum(progress), Named.as("running-count-sum"), STORE)
        .to(output, Produced.with(Serdes.Void(), Serdes.String()).withName("kafka-out"));
    return b.build();
  }

  static final class Args {
    String bootstrap;
    String input;
    String output;
    long records = -1;
    String stateDir;
    long commitIntervalMs = 1000;
    int threads = 1;
    String applicationId;
    long timeoutS = 1800;
    boolean keep;
    Map<String, String> extra = new HashMap<>();

    static Args parse(String[] argv) {
      Args a = new Args();
      for (int i = 0; i < argv.length; i++) {
        String k = argv[i];
        if (k.equals("--keep")) {
          a.keep = true;
          continue;
        }
        if (i + 1 >= argv.length) usage("missing value of " + k);
        String v = argv[++i];
        switch (k) {
          case "--bootstrap" -> a.bootstrap = v;
          case "--input" -> a.input = v;
          case "--output" -> a.output = v;
          case "--records" -> a.records = Long.parseLong(v);
          case "--state-dir" -> a.stateDir = v;
          case "--commit-interval-ms" -> a.commitIntervalMs = Long.parseLong(v);
          case "--threads" -> a.threads = Integer.parseInt(v);
          case "--application-id" -> a.applicationId = v;
          case "--timeout-s" -> a.timeoutS = Long.parseLong(v);
          case "--property" -> {
            int eq = v.indexOf('=');
            if (eq <= 0) usage("--property wants KEY=VALUE, got " + v);
            a.extra.put(v.substring(0, eq), v.substring(eq + 1));
          }
          default -> usage("unknown argument " + k);
        }
      }
      if (a.bootstrap == null || a.input == null || a.output == null || a.records <= 0 || a.stateDir == null) {
        usage("--bootstrap, --input, --output, --records N > 0 and --state-dir are required");
      }
      if (a.applicationId == null) a.applicationId = "weir-peer-kafka-streams-" + System.currentTimeMillis();
      return a;
    }

    static void usage(String why) {
      System.err.println("KafkaStreamsCount: " + why);
      System.err.println("usage: --bootstrap HOST:PORT --input TOPIC --output TOPIC --records N --state-dir DIR"
          + " [--commit-interval-ms 1000] [--threads 1] [--application-id ID] [--timeout-s 1800]"
          + " [--property KEY=VALUE]... [--keep]");
      System.exit(2);
    }
  }

  static void fail(String why) {
    System.err.println("KafkaStreamsCount: " + why);
    System.exit(1);
  }

  public static void main(String[] argv) throws Exception {
    Args a = Args.parse(argv);
    Properties p = new Properties();
    p.put(StreamsConfig.APPLICATION_ID_CONFIG, a.applicationId);
    p.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, a.bootstrap);
    p.put(StreamsConfig.PROCESSING_GUARANTEE_CONFIG, StreamsConfig.EXACTLY_ONCE_V2);
    p.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, a.commitIntervalMs);
    p.put(StreamsConfig.NUM_STREAM_THREADS_CONFIG, a.threads);
    p.put(StreamsConfig.STATE_DIR_CONFIG, new File(a.stateDir).getAbsolutePath());
    // A new application id starts at the input's beginning (Streams' default is earliest too).
    p.put(StreamsConfig.consumerPrefix(ConsumerConfig.AUTO_OFFSET_RESET_CONFIG), "earliest");
    // No global state here; only silences 4.4's warning that this default changes in 5.0.
    p.put("processing.exception.handler.global.enabled", "true");
    p.putAll(a.extra);

    Progress progress = new Progress(a.records);
    Topology topology = topology(a.input, a.output, progress);
    System.err.println(topology.describe());

    KafkaStreams streams = new KafkaStreams(topology, p);
    CountDownLatch running = new CountDownLatch(1);
    AtomicReference<String> failure = new AtomicReference<>();
    AtomicLong runningNanos = new AtomicLong();
    streams.setStateListener((now, before) -> {
      if (now == KafkaStreams.State.RUNNING && runningNanos.compareAndSet(0, System.nanoTime())) running.countDown();
      if (now == KafkaStreams.State.ERROR || now == KafkaStreams.State.PENDING_ERROR) {
        failure.compareAndSet(null, "state " + now);
        running.countDown();
        progress.done.countDown();
      }
    });
    streams.setUncaughtExceptionHandler(e -> {
      failure.compareAndSet(null, e.toString() + (e.getCause() != null ? " (cause: " + e.getCause() + ")" : ""));
      running.countDown();
      progress.done.countDown();
      return StreamsUncaughtExceptionHandler.StreamThreadExceptionResponse.SHUTDOWN_CLIENT;
    });

    long t0 = System.nanoTime();
    streams.start();
    if (!running.await(Math.min(a.timeoutS, 300), TimeUnit.SECONDS)) {
      streams.close(Duration.ofSeconds(30));
      fail("not RUNNING after " + Math.min(a.timeoutS, 300) + " s (state " + streams.state() + ")");
    }
    if (failure.get() != null) {
      streams.close(Duration.ofSeconds(30));
      fail("failed while starting: " + failure.get());
    }
    long startedNanos = runningNanos.get();
    System.err.printf("KafkaStreamsCount: RUNNING after %.3f s (application.id %s)%n",
        (startedNanos - t0) / 1e9, a.applicationId);

    boolean reached = progress.done.await(a.timeoutS, TimeUnit.SECONDS);
    if (failure.get() != null) {
      streams.close(Duration.ofSeconds(30));
      fail("failed after " + progress.processed.get() + " records: " + failure.get());
    }
    if (!reached) {
      streams.close(Duration.ofSeconds(30));
      fail("only " + progress.processed.get() + " of " + a.records + " records in " + a.timeoutS + " s");
    }
    long closeStart = System.nanoTime();
    // A clean close commits every task: the open transaction (output, changelog, repartition
    // records) and the input and repartition offsets. LEAVE_GROUP so the group can be deleted.
    boolean clean = streams.close(CloseOptions.timeout(Duration.ofSeconds(120))
        .withGroupMembershipOperation(CloseOptions.GroupMembershipOperation.LEAVE_GROUP));
    long t1 = System.nanoTime();
    if (!clean || streams.state() != KafkaStreams.State.NOT_RUNNING) {
      fail("close did not finish cleanly (state " + streams.state() + "): the last transaction may be uncommitted");
    }
    if (progress.processed.get() != a.records) {
      System.err.println("KafkaStreamsCount: warning: " + progress.processed.get() + " records went through the count,"
          + " not " + a.records + " (input longer than --records, or records processed again after an abort)");
    }

    long committed = committedInput(a);
    if (!a.keep) cleanup(a, streams);

    double seconds = (t1 - t0) / 1e9;
    System.out.println(String.format(java.util.Locale.ROOT,
        "{\"peer\":\"kafka-streams\",\"records\":%d,\"seconds\":%.3f,\"records_per_s\":%.0f,"
            + "\"startup_s\":%.3f,\"first_to_last_s\":%.3f,\"close_s\":%.3f,\"threads\":%d,\"commit_interval_ms\":%d,"
            + "\"input_offsets_committed\":%d,\"processing_guarantee\":\"exactly_once_v2\"}",
        a.records, seconds, a.records / seconds,
        (startedNanos - t0) / 1e9, (progress.doneNanos - progress.firstNanos.get()) / 1e9, (t1 - closeStart) / 1e9,
        a.threads, a.commitIntervalMs, committed));
    System.out.flush();
    System.exit(0);
  }

  static Admin admin(Args a) {
    Properties p = new Properties();
    p.put(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, a.bootstrap);
    for (Map.Entry<String, String> e : a.extra.entrySet()) {
      // security settings of --property apply to the admin client too
      if (e.getKey().startsWith("security.") || e.getKey().startsWith("ssl.") || e.getKey().startsWith("sasl.")) {
        p.put(e.getKey(), e.getValue());
      }
    }
    return Admin.create(p);
  }

  /** Input records covered by the group's committed offsets (committed minus earliest, summed); -1 if unknown. */
  static long committedInput(Args a) {
    try (Admin admin = admin(a)) {
      Map<TopicPartition, OffsetAndMetadata> offsets =
          admin.listConsumerGroupOffsets(a.applicationId).partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
      Map<TopicPartition, OffsetSpec> earliest = new HashMap<>();
      for (TopicPartition tp : offsets.keySet()) {
        if (tp.topic().equals(a.input)) earliest.put(tp, OffsetSpec.earliest());
      }
      Map<TopicPartition, ListOffsetsResult.ListOffsetsResultInfo> start =
          admin.listOffsets(earliest).all().get(30, TimeUnit.SECONDS);
      long n = 0;
      for (TopicPartition tp : earliest.keySet()) n += offsets.get(tp).offset() - start.get(tp).offset();
      return n;
    } catch (Exception e) {
      System.err.println("KafkaStreamsCount: warning: could not read the committed offsets: " + e);
      return -1;
    }
  }

  /** Deletes the run's internal topics, consumer group and local state (a new application id per run). */
  static void cleanup(Args a, KafkaStreams streams) {
    try {
      streams.cleanUp(); // leaves DIR/ID with a lock and process metadata file
      Path dir = Path.of(a.stateDir).toAbsolutePath().resolve(a.applicationId);
      if (Files.exists(dir)) {
        try (Stream<Path> walk = Files.walk(dir)) {
          for (Path f : walk.sorted(Comparator.reverseOrder()).toList()) Files.delete(f);
        }
      }
    } catch (Exception e) {
      System.err.println("KafkaStreamsCount: warning: local state not removed: " + e);
    }
    try (Admin admin = admin(a)) {
      Set<String> topics = admin.listTopics().names().get(30, TimeUnit.SECONDS);
      List<String> internal = topics.stream()
          .filter(t -> t.startsWith(a.applicationId + "-") && (t.endsWith("-repartition") || t.endsWith("-changelog")))
          .collect(Collectors.toList());
      admin.deleteTopics(internal).all().get(60, TimeUnit.SECONDS);
      admin.deleteConsumerGroups(List.of(a.applicationId)).all().get(60, TimeUnit.SECONDS);
      System.err.println("KafkaStreamsCount: deleted " + internal + " and group " + a.applicationId);
    } catch (Exception e) {
      System.err.println("KafkaStreamsCount: warning: internal topics or group not deleted: " + e);
    }
  }
}
