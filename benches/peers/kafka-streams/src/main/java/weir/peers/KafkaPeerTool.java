package weir.peers;

import java.time.Duration;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicReference;
import org.apache.kafka.clients.admin.Admin;
import org.apache.kafka.clients.admin.AdminClientConfig;
import org.apache.kafka.clients.admin.NewTopic;
import org.apache.kafka.clients.consumer.ConsumerConfig;
import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.apache.kafka.clients.consumer.KafkaConsumer;
import org.apache.kafka.clients.producer.KafkaProducer;
import org.apache.kafka.clients.producer.ProducerConfig;
import org.apache.kafka.clients.producer.ProducerRecord;
import org.apache.kafka.common.PartitionInfo;
import org.apache.kafka.common.TopicPartition;
import org.apache.kafka.common.serialization.ByteArrayDeserializer;
import org.apache.kafka.common.serialization.StringDeserializer;
import org.apache.kafka.common.serialization.StringSerializer;

/**
 * Helpers for trying the peer by hand (the broker's jars have no kafka-topics tool):
 *
 * <pre>
 * create-topics --bootstrap B --partitions P TOPIC...
 * produce --bootstrap B --topic T --records N [--keys 1000] [--first-id 0]
 *     values "id,key,value" without a Kafka key, id = first-id.., partition = id mod partitions,
 *     key and value in [0, keys) and [0, 1000) from a fixed hash of id
 * verify --bootstrap B --input T --output T
 *     reads both topics read_committed and checks: one output per input id, values
 *     "id,key,count,sum" in canonical form with the input's key, per key the counts are 1..n and
 *     every sum is the previous sum plus the record's value, and per key and output partition the
 *     counts increase. Prints one JSON line; exit 1 on a mismatch.
 * </pre>
 */
public final class KafkaPeerTool {
  public static void main(String[] argv) throws Exception {
    if (argv.length == 0) usage();
    Map<String, String> opts = new HashMap<>();
    List<String> rest = new ArrayList<>();
    for (int i = 1; i < argv.length; i++) {
      if (argv[i].startsWith("--")) {
        if (i + 1 >= argv.length) usage();
        opts.put(argv[i], argv[++i]);
      } else {
        rest.add(argv[i]);
      }
    }
    String bootstrap = opts.get("--bootstrap");
    if (bootstrap == null) usage();
    switch (argv[0]) {
      case "create-topics" -> createTopics(bootstrap, Integer.parseInt(opts.getOrDefault("--partitions", "1")), rest);
      case "produce" -> produce(bootstrap, req(opts, "--topic"), Long.parseLong(req(opts, "--records")),
          Long.parseLong(opts.getOrDefault("--keys", "1000")), Long.parseLong(opts.getOrDefault("--first-id", "0")));
      case "verify" -> System.exit(verify(bootstrap, req(opts, "--input"), req(opts, "--output")) ? 0 : 1);
      default -> usage();
    }
  }

  static String req(Map<String, String> opts, String k) {
    String v = opts.get(k);
    if (v == null) usage();
    return v;
  }

  static void usage() {
    System.err.println("usage: KafkaPeerTool create-topics --bootstrap B --partitions P TOPIC...\n"
        + "       KafkaPeerTool produce --bootstrap B --topic T --records N [--keys 1000] [--first-id 0]\n"
        + "       KafkaPeerTool verify --bootstrap B --input T --output T");
    System.exit(2);
  }

  static void createTopics(String bootstrap, int partitions, List<String> topics) throws Exception {
    try (Admin admin = Admin.create(Map.of(AdminClientConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap))) {
      List<NewTopic> nt = new ArrayList<>();
      for (String t : topics) nt.add(new NewTopic(t, partitions, (short) 1));
      admin.createTopics(nt).all().get(60, TimeUnit.SECONDS);
      System.err.println("created " + topics + " with " + partitions + " partitions");
    }
  }

  static long mix(long x) {
    x += 0x9E3779B97F4A7C15L;
    x = (x ^ (x >>> 30)) * 0xBF58476D1CE4E5B9L;
    x = (x ^ (x >>> 27)) * 0x94D049BB133111EBL;
    return x ^ (x >>> 31);
  }

  static void produce(String bootstrap, String topic, long records, long keys, long firstId) throws Exception {
    Properties p = new Properties();
    p.put(ProducerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ProducerConfig.ACKS_CONFIG, "all");
    p.put(ProducerConfig.LINGER_MS_CONFIG, 10);
    p.put(ProducerConfig.BATCH_SIZE_CONFIG, 256 * 1024);
    p.put(ProducerConfig.KEY_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    p.put(ProducerConfig.VALUE_SERIALIZER_CLASS_CONFIG, StringSerializer.class.getName());
    AtomicReference<Exception> err = new AtomicReference<>();
    long t0 = System.nanoTime();
    try (KafkaProducer<String, String> producer = new KafkaProducer<>(p)) {
      int partitions = producer.partitionsFor(topic).size();
      for (long i = firstId; i < firstId + records && err.get() == null; i++) {
        long h = mix(i);
        long key = Long.remainderUnsigned(h, keys);
        long value = Long.remainderUnsigned(h >>> 32, 1000);
        producer.send(new ProducerRecord<>(topic, (int) Long.remainderUnsigned(i, partitions), null, i + "," + key + "," + value),
            (md, e) -> { if (e != null) err.compareAndSet(null, e); });
      }
      producer.flush();
    }
    if (err.get() != null) throw err.get();
    System.err.printf("produced %d records to %s in %.2f s%n", records, topic, (System.nanoTime() - t0) / 1e9);
  }

  interface Sink {
    void accept(ConsumerRecord<byte[], String> r);
  }

  /** Reads every partition of {@code topic}, read_committed, from the beginning to the end seen at start. */
  static void readAll(String bootstrap, String topic, Sink sink) {
    Properties p = new Properties();
    p.put(ConsumerConfig.BOOTSTRAP_SERVERS_CONFIG, bootstrap);
    p.put(ConsumerConfig.ISOLATION_LEVEL_CONFIG, "read_committed");
    p.put(ConsumerConfig.ENABLE_AUTO_COMMIT_CONFIG, false);
    p.put(ConsumerConfig.MAX_POLL_RECORDS_CONFIG, 10000);
    try (KafkaConsumer<byte[], String> c = new KafkaConsumer<>(p, new ByteArrayDeserializer(), new StringDeserializer())) {
      List<TopicPartition> tps = new ArrayList<>();
      for (PartitionInfo pi : c.partitionsFor(topic)) tps.add(new TopicPartition(topic, pi.partition()));
      c.assign(tps);
      c.seekToBeginning(tps);
      Map<TopicPartition, Long> end = c.endOffsets(tps); // the last stable offset under read_committed
      long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(300);
      while (true) {
        boolean done = true;
        for (TopicPartition tp : tps) if (c.position(tp) < end.get(tp)) done = false;
        if (done) break;
        if (System.nanoTime() > deadline) throw new IllegalStateException("timed out reading " + topic);
        for (ConsumerRecord<byte[], String> r : c.poll(Duration.ofMillis(500))) {
          if (r.offset() < end.get(new TopicPartition(r.topic(), r.partition()))) sink.accept(r);
        }
      }
    }
  }

  static boolean verify(String bootstrap, String input, String output) {
    Map<Long, long[]> in = new HashMap<>(); // id -> (key, value)
    List<String> errors = new ArrayList<>();
    readAll(bootstrap, input, r -> {
      String[] f = r.value().split(",", -1);
      long id = Long.parseUnsignedLong(f[0].strip());
      if (in.put(id, new long[] {Long.parseUnsignedLong(f[1].strip()), Long.parseUnsignedLong(f[2].strip())}) != null) {
        errors.add("input id " + id + " twice");
      }
    });
    Map<Long, long[]> out = new HashMap<>(); // id -> (count, sum, partition)
    long[] outRecords = {0};
    long[] keyed = {0};
    Map<Long, Map<Integer, Long>> lastCount = new HashMap<>(); // key -> partition -> last count
    readAll(bootstrap, output, r -> {
      outRecords[0]++;
      if (r.key() != null) keyed[0]++;
      String v = r.value();
      String[] f = v.split(",", -1);
      if (f.length != 4) {
        if (errors.size() < 20) errors.add("not id,key,count,sum: " + v);
        return;
      }
      long id = Long.parseUnsignedLong(f[0]), key = Long.parseUnsignedLong(f[1]);
      long count = Long.parseUnsignedLong(f[2]), sum = Long.parseUnsignedLong(f[3]);
      String canon = Long.toUnsignedString(id) + "," + Long.toUnsignedString(key) + "," + Long.toUnsignedString(count)
          + "," + Long.toUnsignedString(sum);
      if (!canon.equals(v) && errors.size() < 20) errors.add("not canonical: " + v);
      long[] src = in.get(id);
      if (src == null) {
        if (errors.size() < 20) errors.add("output for unknown id: " + v);
        return;
      }
      if (src[0] != key && errors.size() < 20) errors.add("wrong key: " + v);
      if (out.put(id, new long[] {count, sum, r.partition()}) != null && errors.size() < 20) {
        errors.add("id " + id + " output twice");
      }
      Long prev = lastCount.computeIfAbsent(key, k -> new HashMap<>()).put(r.partition(), count);
      if (prev != null && prev >= count && errors.size() < 20) {
        errors.add("key " + key + " partition " + r.partition() + ": count " + count + " after " + prev);
      }
    });
    for (Long id : in.keySet()) {
      if (!out.containsKey(id)) {
        if (errors.size() < 20) errors.add("no output for id " + id);
      }
    }
    // per key: counts 1..n, sum(c) = sum(c-1) + value of the record with count c
    Map<Long, List<long[]>> byKey = new HashMap<>(); // key -> (count, sum, value)
    for (Map.Entry<Long, long[]> e : out.entrySet()) {
      long[] src = in.get(e.getKey());
      byKey.computeIfAbsent(src[0], k -> new ArrayList<>()).add(new long[] {e.getValue()[0], e.getValue()[1], src[1]});
    }
    for (Map.Entry<Long, List<long[]>> e : byKey.entrySet()) {
      List<long[]> l = e.getValue();
      l.sort((x, y) -> Long.compareUnsigned(x[0], y[0]));
      long sum = 0;
      for (int i = 0; i < l.size(); i++) {
        long[] x = l.get(i);
        sum += x[2];
        if ((x[0] != i + 1 || x[1] != sum) && errors.size() < 20) {
          errors.add("key " + e.getKey() + ": record " + (i + 1) + " has count " + x[0] + " sum " + x[1] + ", expected sum " + sum);
          break;
        }
      }
    }
    boolean ok = errors.isEmpty();
    for (String e : errors) System.err.println("verify: " + e);
    System.out.printf("{\"verify\":\"%s\",\"input_records\":%d,\"output_records\":%d,\"distinct_output_ids\":%d,\"keys\":%d,\"keyed_output_records\":%d}%n",
        ok ? "ok" : "FAILED", in.size(), outRecords[0], out.size(), byKey.size(), keyed[0]);
    return ok;
  }
}
