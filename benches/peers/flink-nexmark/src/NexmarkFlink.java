import java.io.BufferedWriter;
import java.io.File;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.OutputStreamWriter;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.TreeSet;
import java.util.concurrent.atomic.AtomicLong;

import org.apache.flink.api.common.JobExecutionResult;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.functions.AggregateFunction;
import org.apache.flink.api.common.functions.CoGroupFunction;
import org.apache.flink.api.common.functions.FlatMapFunction;
import org.apache.flink.api.common.functions.MapFunction;
import org.apache.flink.api.common.functions.OpenContext;
import org.apache.flink.api.common.functions.RichFlatMapFunction;
import org.apache.flink.api.common.state.ListState;
import org.apache.flink.api.common.state.ListStateDescriptor;
import org.apache.flink.api.common.typeinfo.TypeInformation;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.sink2.Sink;
import org.apache.flink.api.connector.sink2.SinkWriter;
import org.apache.flink.api.connector.sink2.WriterInitContext;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.connector.file.src.FileSource;
import org.apache.flink.connector.file.src.reader.TextLineInputFormat;
import org.apache.flink.core.fs.Path;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonFactory;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonGenerator;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonParser;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.core.JsonToken;
import org.apache.flink.streaming.api.datastream.DataStream;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.co.KeyedCoProcessFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessAllWindowFunction;
import org.apache.flink.streaming.api.functions.windowing.ProcessWindowFunction;
import org.apache.flink.streaming.api.windowing.assigners.EventTimeSessionWindows;
import org.apache.flink.streaming.api.windowing.assigners.SlidingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.assigners.TumblingEventTimeWindows;
import org.apache.flink.streaming.api.windowing.windows.TimeWindow;
import org.apache.flink.util.Collector;

/**
 * Nexmark q0, q1, q2, q3, q5, q7, q8, q11 on Apache Flink 2.3 (DataStream API, local MiniCluster in
 * this JVM), reading a JSON-lines file of Nexmark events, for side-by-side runs with weir's
 * {@code weir::nexmark} queries on the same file.
 *
 * <p>Usage: {@code java -cp ... NexmarkFlink QUERY INPUT.jsonl BACKEND(rocksdb|hashmap) CKPT_MS(0=off)
 * [OUTPUT.jsonl]}
 *
 * <p>System properties: {@code nexmark.parallelism} (1), {@code nexmark.objectReuse} (true),
 * {@code nexmark.ckptDir} (/tmp/flink-nexmark-ckpt), {@code nexmark.q11SplitAtGap} (false; see q11).
 *
 * <p>Prints one line {@code RESULT {...}}. Timing fields:
 *
 * <ul>
 *   <li>{@code secs}: wall time of {@code env.execute()}. This INCLUDES MiniCluster start and stop
 *       (the local environment starts the MiniCluster inside execute), job submission, and the wait
 *       for the final checkpoint after end of input; {@code events_per_s = events / secs}. It is the
 *       counterpart of weir's {@code elapsed_s} (wall time of {@code job.run}).
 *   <li>{@code job_secs}: {@code JobExecutionResult.getNetRuntime()} (job start to job end as seen by
 *       the JobMaster; excludes MiniCluster start/stop).
 *   <li>{@code data_secs}: first input line parsed to end of input at the sink (after the final
 *       watermark fired every window); this is the convention of {@code peers.PeersJob}'s
 *       {@code secs} (first record to last sink write), with {@code data_events_per_s}.
 * </ul>
 *
 * <p>Event time is {@code dateTime}; watermarks {@code forBoundedOutOfOrderness(4 s)} (periodic, every
 * 200 ms by Flink's default); windows aligned to epoch 0; records later than the watermark are
 * dropped by the window operators (Flink's default, allowed lateness 0). The bounded FileSource ends
 * with a MAX watermark, which fires every remaining window.
 */
public class NexmarkFlink {

    // ---------------------------------------------------------------- measurement (one JVM)

    static final AtomicLong EVENTS = new AtomicLong();
    static final AtomicLong ROWS = new AtomicLong();
    static final AtomicLong FIRST_NS = new AtomicLong(Long.MAX_VALUE);
    static final AtomicLong END_NS = new AtomicLong(Long.MIN_VALUE);

    static void minUpdate(AtomicLong a, long v) {
        long cur;
        while (v < (cur = a.get()) && !a.compareAndSet(cur, v)) {}
    }

    static void maxUpdate(AtomicLong a, long v) {
        long cur;
        while (v > (cur = a.get()) && !a.compareAndSet(cur, v)) {}
    }

    static final long WINDOW_MS = 10_000L;

    // ---------------------------------------------------------------- events (Flink POJOs)

    public static class Person {
        public long id;
        public String name;
        public String emailAddress;
        public String creditCard;
        public String city;
        public String state;
        public long dateTime;
        public String extra;

        public Person() {}
    }

    public static class Auction {
        public long id;
        public String itemName;
        public String description;
        public long initialBid;
        public long reserve;
        public long dateTime;
        public long expires;
        public long seller;
        public long category;
        public String extra;

        public Auction() {}
    }

    public static class Bid {
        public long auction;
        public long bidder;
        public long price;
        public String channel;
        public String url;
        public long dateTime;
        public String extra;

        public Bid() {}
    }

    /** One Nexmark event: exactly one of person, auction, bid is set. */
    public static class Event {
        public Person person;
        public Auction auction;
        public Bid bid;
        public long dateTime;

        public Event() {}
    }

    // ---------------------------------------------------------------- JSON parsing (shaded Jackson, streaming)

    static final JsonFactory JSON = new JsonFactory();

    // presence bits of required fields
    static final int F_ID = 1, F_NAME = 2, F_CITY = 4, F_STATE = 8, F_DATE = 16, F_SELLER = 32, F_CATEGORY = 64,
            F_AUCTION = 128, F_BIDDER = 256, F_PRICE = 512;

    static long num(JsonParser p, JsonToken t, String field) throws IOException {
        if (t != JsonToken.VALUE_NUMBER_INT) throw new IOException("field " + field + " is not an integer");
        return p.getLongValue();
    }

    static String str(JsonParser p, JsonToken t, String field) throws IOException {
        if (t != JsonToken.VALUE_STRING) throw new IOException("field " + field + " is not a string");
        return p.getText();
    }

    static void need(int seen, int bits, String kind, String line) throws IOException {
        if ((seen & bits) != bits) throw new IOException("Nexmark " + kind + " event without a required field: " + line);
    }

    /** Parses one JSON event in one pass (fields in any order, unknown fields skipped). */
    static Event parse(String line) throws IOException {
        String type = null;
        long id = 0, initialBid = 0, reserve = 0, expires = 0, seller = 0, category = 0, auction = 0, bidder = 0,
                price = 0, dateTime = 0;
        String name = "", emailAddress = "", creditCard = "", city = "", state = "", itemName = "",
                description = "", channel = "", url = "", extra = "";
        int seen = 0;
        try (JsonParser p = JSON.createParser(line)) {
            if (p.nextToken() != JsonToken.START_OBJECT) throw new IOException("not a JSON object: " + line);
            while (p.nextToken() == JsonToken.FIELD_NAME) {
                String f = p.currentName();
                JsonToken t = p.nextToken();
                switch (f) {
                    case "type": type = str(p, t, f); break;
                    case "id": id = num(p, t, f); seen |= F_ID; break;
                    case "name": name = str(p, t, f); seen |= F_NAME; break;
                    case "emailAddress": emailAddress = str(p, t, f); break;
                    case "creditCard": creditCard = str(p, t, f); break;
                    case "city": city = str(p, t, f); seen |= F_CITY; break;
                    case "state": state = str(p, t, f); seen |= F_STATE; break;
                    case "itemName": itemName = str(p, t, f); break;
                    case "description": description = str(p, t, f); break;
                    case "initialBid": initialBid = num(p, t, f); break;
                    case "reserve": reserve = num(p, t, f); break;
                    case "expires": expires = num(p, t, f); break;
                    case "seller": seller = num(p, t, f); seen |= F_SELLER; break;
                    case "category": category = num(p, t, f); seen |= F_CATEGORY; break;
                    case "auction": auction = num(p, t, f); seen |= F_AUCTION; break;
                    case "bidder": bidder = num(p, t, f); seen |= F_BIDDER; break;
                    case "price": price = num(p, t, f); seen |= F_PRICE; break;
                    case "channel": channel = str(p, t, f); break;
                    case "url": url = str(p, t, f); break;
                    case "dateTime": dateTime = num(p, t, f); seen |= F_DATE; break;
                    case "extra": extra = str(p, t, f); break;
                    default: p.skipChildren();
                }
            }
        }
        Event e = new Event();
        e.dateTime = dateTime;
        if ("bid".equals(type)) {
            need(seen, F_AUCTION | F_BIDDER | F_PRICE | F_DATE, "bid", line);
            Bid b = new Bid();
            b.auction = auction; b.bidder = bidder; b.price = price; b.channel = channel; b.url = url;
            b.dateTime = dateTime; b.extra = extra;
            e.bid = b;
        } else if ("person".equals(type)) {
            need(seen, F_ID | F_NAME | F_CITY | F_STATE | F_DATE, "person", line);
            Person x = new Person();
            x.id = id; x.name = name; x.emailAddress = emailAddress; x.creditCard = creditCard; x.city = city;
            x.state = state; x.dateTime = dateTime; x.extra = extra;
            e.person = x;
        } else if ("auction".equals(type)) {
            need(seen, F_ID | F_DATE | F_SELLER | F_CATEGORY, "auction", line);
            Auction a = new Auction();
            a.id = id; a.itemName = itemName; a.description = description; a.initialBid = initialBid;
            a.reserve = reserve; a.dateTime = dateTime; a.expires = expires; a.seller = seller;
            a.category = category; a.extra = extra;
            e.auction = a;
        } else {
            throw new IOException("Nexmark event of unknown type " + type + ": " + line);
        }
        return e;
    }

    /** Line -> Event; counts input lines (events) and notes when the first one was read. */
    public static class Parse extends RichFlatMapFunction<String, Event> {
        transient long n;

        @Override
        public void open(OpenContext ctx) {
            n = 0;
        }

        @Override
        public void flatMap(String line, Collector<Event> out) throws IOException {
            if (line.isEmpty()) return;
            if (n++ == 0) minUpdate(FIRST_NS, System.nanoTime());
            out.collect(parse(line));
        }

        @Override
        public void close() {
            EVENTS.addAndGet(n);
        }
    }

    public static class Bids implements FlatMapFunction<Event, Bid> {
        @Override
        public void flatMap(Event e, Collector<Bid> out) {
            if (e.bid != null) out.collect(e.bid);
        }
    }

    // ---------------------------------------------------------------- output rows

    /** A result row: writes itself as one JSON object with the query's field names. */
    public interface Row {
        void write(JsonGenerator g) throws IOException;
    }

    /** q0, q1. */
    public static class BidRow implements Row {
        public long auction, bidder, price, dateTime;
        public String extra;

        public BidRow() {}

        BidRow(Bid b, long price) {
            auction = b.auction; bidder = b.bidder; this.price = price; dateTime = b.dateTime; extra = b.extra;
        }

        public void write(JsonGenerator g) throws IOException {
            g.writeNumberField("auction", auction);
            g.writeNumberField("bidder", bidder);
            g.writeNumberField("price", price);
            g.writeNumberField("dateTime", dateTime);
            g.writeStringField("extra", extra);
        }
    }

    public static class Q2Row implements Row {
        public long auction, price;

        public Q2Row() {}

        public void write(JsonGenerator g) throws IOException {
            g.writeNumberField("auction", auction);
            g.writeNumberField("price", price);
        }
    }

    public static class Q3Row implements Row {
        public String name, city, state;
        public long id;

        public Q3Row() {}

        public void write(JsonGenerator g) throws IOException {
            g.writeStringField("name", name);
            g.writeStringField("city", city);
            g.writeStringField("state", state);
            g.writeNumberField("id", id);
        }
    }

    public static class Q5Row implements Row {
        public long auction, num, windowStart, windowEnd;

        public Q5Row() {}

        public void write(JsonGenerator g) throws IOException {
            g.writeNumberField("auction", auction);
            g.writeNumberField("num", num);
            g.writeNumberField("window_start", windowStart);
            g.writeNumberField("window_end", windowEnd);
        }
    }

    public static class Q7Row implements Row {
        public long auction, bidder, price, dateTime, windowStart, windowEnd;

        public Q7Row() {}

        public void write(JsonGenerator g) throws IOException {
            g.writeNumberField("auction", auction);
            g.writeNumberField("bidder", bidder);
            g.writeNumberField("price", price);
            g.writeNumberField("dateTime", dateTime);
            g.writeNumberField("window_start", windowStart);
            g.writeNumberField("window_end", windowEnd);
        }
    }

    public static class Q8Row implements Row {
        public long id;
        public String name;
        public long windowStart;

        public Q8Row() {}

        public void write(JsonGenerator g) throws IOException {
            g.writeNumberField("id", id);
            g.writeStringField("name", name);
            g.writeNumberField("window_start", windowStart);
        }
    }

    public static class Q11Row implements Row {
        public long bidder, bidCount, windowStart, windowEnd;

        public Q11Row() {}

        public void write(JsonGenerator g) throws IOException {
            g.writeNumberField("bidder", bidder);
            g.writeNumberField("bid_count", bidCount);
            g.writeNumberField("window_start", windowStart);
            g.writeNumberField("window_end", windowEnd);
        }
    }

    // ---------------------------------------------------------------- q0, q1, q2 (stateless)

    public static class Q0 implements MapFunction<Bid, BidRow> {
        public BidRow map(Bid b) {
            return new BidRow(b, b.price);
        }
    }

    public static class Q1 implements MapFunction<Bid, BidRow> {
        public BidRow map(Bid b) {
            return new BidRow(b, b.price * 908 / 1000);
        }
    }

    public static class Q2 implements FlatMapFunction<Bid, Q2Row> {
        public void flatMap(Bid b, Collector<Q2Row> out) {
            if (b.auction % 123 == 0) {
                Q2Row r = new Q2Row();
                r.auction = b.auction;
                r.price = b.price;
                out.collect(r);
            }
        }
    }

    // ---------------------------------------------------------------- q3: unbounded inner join

    /** A person as q3 keeps it. */
    public static class Seller {
        public long id;
        public String name, city, state;
        public long dateTime;

        public Seller() {}
    }

    /** An auction as q3 and q8 keep it. */
    public static class Sold {
        public long id, seller, dateTime;

        public Sold() {}
    }

    public static class Q3Persons implements FlatMapFunction<Event, Seller> {
        public void flatMap(Event e, Collector<Seller> out) {
            Person p = e.person;
            if (p != null && (p.state.equals("OR") || p.state.equals("ID") || p.state.equals("CA"))) {
                Seller s = new Seller();
                s.id = p.id; s.name = p.name; s.city = p.city; s.state = p.state; s.dateTime = p.dateTime;
                out.collect(s);
            }
        }
    }

    public static class Q3Auctions implements FlatMapFunction<Event, Sold> {
        public void flatMap(Event e, Collector<Sold> out) {
            Auction a = e.auction;
            if (a != null && a.category == 10) out.collect(sold(a));
        }
    }

    static Sold sold(Auction a) {
        Sold s = new Sold();
        s.id = a.id; s.seller = a.seller; s.dateTime = a.dateTime;
        return s;
    }

    /** Regular (unbounded) inner join keyed by person id = seller: both sides kept in list state. */
    public static class Q3Join extends KeyedCoProcessFunction<Long, Seller, Sold, Q3Row> {
        transient ListState<Seller> persons;
        transient ListState<Sold> auctions;

        @Override
        public void open(OpenContext ctx) {
            persons = getRuntimeContext().getListState(new ListStateDescriptor<>("q3-persons", Seller.class));
            auctions = getRuntimeContext().getListState(new ListStateDescriptor<>("q3-auctions", Sold.class));
        }

        static Q3Row row(Seller p, Sold a) {
            Q3Row r = new Q3Row();
            r.name = p.name; r.city = p.city; r.state = p.state; r.id = a.id;
            return r;
        }

        @Override
        public void processElement1(Seller p, Context ctx, Collector<Q3Row> out) throws Exception {
            Iterable<Sold> as = auctions.get();
            if (as != null) for (Sold a : as) out.collect(row(p, a));
            persons.add(p);
        }

        @Override
        public void processElement2(Sold a, Context ctx, Collector<Q3Row> out) throws Exception {
            Iterable<Seller> ps = persons.get();
            if (ps != null) for (Seller p : ps) out.collect(row(p, a));
            auctions.add(a);
        }
    }

    // ---------------------------------------------------------------- counting (q5, q11)

    public static class CountBids implements AggregateFunction<Bid, Long, Long> {
        public Long createAccumulator() { return 0L; }
        public Long add(Bid b, Long acc) { return acc + 1; }
        public Long getResult(Long acc) { return acc; }
        public Long merge(Long a, Long b) { return a + b; }
    }

    // ---------------------------------------------------------------- q5: hot items

    /** Bids on one auction in one sliding window. */
    public static class AuctionCount {
        public long auction, num, windowStart, windowEnd;

        public AuctionCount() {}
    }

    public static class Q5Count extends ProcessWindowFunction<Long, AuctionCount, Long, TimeWindow> {
        @Override
        public void process(Long auction, Context ctx, Iterable<Long> counts, Collector<AuctionCount> out) {
            AuctionCount c = new AuctionCount();
            c.auction = auction;
            c.num = counts.iterator().next();
            c.windowStart = ctx.window().getStart();
            c.windowEnd = ctx.window().getEnd();
            out.collect(c);
        }
    }

    /** The highest count of a window so far and the auctions that have it. */
    public static class Hottest {
        public long max = Long.MIN_VALUE;
        public long windowEnd;
        public List<Long> auctions = new ArrayList<>();

        public Hottest() {}
    }

    public static class MaxCount implements AggregateFunction<AuctionCount, Hottest, Hottest> {
        public Hottest createAccumulator() { return new Hottest(); }

        public Hottest add(AuctionCount c, Hottest acc) {
            if (c.num > acc.max) {
                acc.max = c.num;
                acc.auctions.clear();
            }
            if (c.num == acc.max) acc.auctions.add(c.auction);
            acc.windowEnd = c.windowEnd;
            return acc;
        }

        public Hottest getResult(Hottest acc) { return acc; }

        public Hottest merge(Hottest a, Hottest b) {
            if (b.max > a.max) return b;
            if (b.max == a.max) a.auctions.addAll(b.auctions);
            return a;
        }
    }

    /** Keyed by the sliding window's start; emits the auctions with the window's highest count. */
    public static class Q5Emit extends ProcessWindowFunction<Hottest, Q5Row, Long, TimeWindow> {
        @Override
        public void process(Long windowStart, Context ctx, Iterable<Hottest> in, Collector<Q5Row> out) {
            Hottest h = in.iterator().next();
            for (long auction : h.auctions) {
                Q5Row r = new Q5Row();
                r.auction = auction; r.num = h.max; r.windowStart = windowStart; r.windowEnd = h.windowEnd;
                out.collect(r);
            }
        }
    }

    // ---------------------------------------------------------------- q7: highest bid

    /** A bid as q7 keeps it. */
    public static class PricedBid {
        public long auction, bidder, price, dateTime;

        public PricedBid() {}
    }

    public static class HighBids {
        public long max = Long.MIN_VALUE;
        public List<PricedBid> ties = new ArrayList<>();

        public HighBids() {}
    }

    public static class MaxPrice implements AggregateFunction<Bid, HighBids, HighBids> {
        public HighBids createAccumulator() { return new HighBids(); }

        public HighBids add(Bid b, HighBids acc) {
            if (b.price > acc.max) {
                acc.max = b.price;
                acc.ties.clear();
            }
            if (b.price == acc.max) {
                PricedBid p = new PricedBid();
                p.auction = b.auction; p.bidder = b.bidder; p.price = b.price; p.dateTime = b.dateTime;
                acc.ties.add(p);
            }
            return acc;
        }

        public HighBids getResult(HighBids acc) { return acc; }

        public HighBids merge(HighBids a, HighBids b) {
            if (b.max > a.max) return b;
            if (b.max == a.max) a.ties.addAll(b.ties);
            return a;
        }
    }

    public static class Q7Emit extends ProcessAllWindowFunction<HighBids, Q7Row, TimeWindow> {
        @Override
        public void process(Context ctx, Iterable<HighBids> in, Collector<Q7Row> out) {
            for (PricedBid b : in.iterator().next().ties) {
                Q7Row r = new Q7Row();
                r.auction = b.auction; r.bidder = b.bidder; r.price = b.price; r.dateTime = b.dateTime;
                r.windowStart = ctx.window().getStart();
                r.windowEnd = ctx.window().getEnd();
                out.collect(r);
            }
        }
    }

    // ---------------------------------------------------------------- q8: new users (window join)

    /** A person as q8 keeps it. */
    public static class NewPerson {
        public long id;
        public String name;
        public long dateTime;

        public NewPerson() {}
    }

    public static class Q8Persons implements FlatMapFunction<Event, NewPerson> {
        public void flatMap(Event e, Collector<NewPerson> out) {
            if (e.person != null) {
                NewPerson p = new NewPerson();
                p.id = e.person.id; p.name = e.person.name; p.dateTime = e.person.dateTime;
                out.collect(p);
            }
        }
    }

    public static class Auctions implements FlatMapFunction<Event, Sold> {
        public void flatMap(Event e, Collector<Sold> out) {
            if (e.auction != null) out.collect(sold(e.auction));
        }
    }

    /** Per person id and tumbling window: each distinct (id, name) once if the person sold something. */
    public static class Q8Join implements CoGroupFunction<NewPerson, Sold, Q8Row> {
        @Override
        public void coGroup(Iterable<NewPerson> persons, Iterable<Sold> auctions, Collector<Q8Row> out) {
            if (!auctions.iterator().hasNext()) return;
            TreeSet<String> names = new TreeSet<>();
            long id = 0, windowStart = 0;
            for (NewPerson p : persons) {
                names.add(p.name);
                id = p.id;
                // CoGroupFunction has no window context; windows are tumbling 10 s aligned to epoch 0.
                windowStart = Math.floorDiv(p.dateTime, WINDOW_MS) * WINDOW_MS;
            }
            for (String name : names) {
                Q8Row r = new Q8Row();
                r.id = id; r.name = name; r.windowStart = windowStart;
                out.collect(r);
            }
        }
    }

    // ---------------------------------------------------------------- q11: user sessions

    static final boolean Q11_SPLIT_AT_GAP = Boolean.getBoolean("nexmark.q11SplitAtGap");

    public static class Q11Emit extends ProcessWindowFunction<Long, Q11Row, Long, TimeWindow> {
        final long endAdjust;

        Q11Emit(long endAdjust) {
            this.endAdjust = endAdjust;
        }

        @Override
        public void process(Long bidder, Context ctx, Iterable<Long> counts, Collector<Q11Row> out) {
            Q11Row r = new Q11Row();
            r.bidder = bidder;
            r.bidCount = counts.iterator().next();
            r.windowStart = ctx.window().getStart();
            r.windowEnd = ctx.window().getEnd() + endAdjust;
            out.collect(r);
        }
    }

    // ---------------------------------------------------------------- sink

    /** Counts rows; with a path, also writes each row as one JSON object per line. */
    public static class RowSink<T extends Row> implements Sink<T> {
        final String path;

        RowSink(String path) {
            this.path = path;
        }

        @Override
        public SinkWriter<T> createWriter(WriterInitContext context) throws IOException {
            int parallelism = context.getTaskInfo().getNumberOfParallelSubtasks();
            int index = context.getTaskInfo().getIndexOfThisSubtask();
            String p = path == null ? null : parallelism == 1 ? path : path + "." + index;
            return new RowWriter<>(p);
        }
    }

    static class RowWriter<T extends Row> implements SinkWriter<T> {
        long count;
        boolean ended;
        final BufferedWriter file;
        final JsonGenerator gen;

        RowWriter(String path) throws IOException {
            if (path != null) {
                file = new BufferedWriter(new OutputStreamWriter(new FileOutputStream(path), StandardCharsets.UTF_8), 1 << 16);
                gen = JSON.createGenerator(file);
                gen.setRootValueSeparator(null);
            } else {
                file = null;
                gen = null;
            }
        }

        @Override
        public void write(T row, Context ctx) throws IOException {
            count++;
            if (gen != null) {
                gen.writeStartObject();
                row.write(gen);
                gen.writeEndObject();
                gen.writeRaw('\n');
            }
        }

        @Override
        public void flush(boolean endOfInput) throws IOException {
            if (endOfInput) {
                if (gen != null) gen.flush();
                ended = true;
                maxUpdate(END_NS, System.nanoTime());
            }
        }

        @Override
        public void close() throws IOException {
            if (gen != null) gen.close();
            ROWS.addAndGet(count);
            if (!ended) maxUpdate(END_NS, System.nanoTime()); // fallback: flush(true) was not called
        }
    }

    static <T extends Row> void sink(DataStream<T> rows, String path) {
        rows.sinkTo(new RowSink<T>(path)).name(path == null ? "count-rows" : "json-rows");
    }

    // ---------------------------------------------------------------- the queries

    static DataStream<? extends Row> build(String query, DataStream<Event> events) {
        TypeInformation<Long> L = Types.LONG;
        DataStream<Bid> bids = query.matches("q[012]|q5|q7|q11")
                ? events.flatMap(new Bids()).name("bids") : null;
        switch (query) {
            case "q0":
                return bids.map(new Q0()).name("q0");
            case "q1":
                return bids.map(new Q1()).name("q1");
            case "q2":
                return bids.flatMap(new Q2()).name("q2");
            case "q3": {
                DataStream<Seller> persons = events.flatMap(new Q3Persons()).name("q3-persons");
                DataStream<Sold> auctions = events.flatMap(new Q3Auctions()).name("q3-auctions");
                return persons.connect(auctions)
                        .keyBy(p -> p.id, a -> a.seller, L)
                        .process(new Q3Join()).name("q3-join").uid("q3-join");
            }
            case "q5":
                return bids.keyBy(b -> b.auction, L)
                        .window(SlidingEventTimeWindows.of(Duration.ofSeconds(10), Duration.ofSeconds(2)))
                        .aggregate(new CountBids(), new Q5Count()).name("q5-count").uid("q5-count")
                        // each count carries timestamp window_end - 1, so it falls into the tumbling
                        // 2 s window ending at window_end; keyed by window_start = one sliding window
                        .keyBy(c -> c.windowStart, L)
                        .window(TumblingEventTimeWindows.of(Duration.ofSeconds(2)))
                        .aggregate(new MaxCount(), new Q5Emit()).name("q5-hottest").uid("q5-hottest");
            case "q7":
                return bids.windowAll(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                        .aggregate(new MaxPrice(), new Q7Emit()).name("q7-highest").uid("q7-highest");
            case "q8": {
                DataStream<NewPerson> persons = events.flatMap(new Q8Persons()).name("q8-persons");
                DataStream<Sold> auctions = events.flatMap(new Auctions()).name("q8-auctions");
                return persons.coGroup(auctions)
                        .where(p -> p.id, L)
                        .equalTo(a -> a.seller)
                        .window(TumblingEventTimeWindows.of(Duration.ofSeconds(10)))
                        .apply(new Q8Join()).name("q8-join").uid("q8-join");
            }
            case "q11":
                // Flink merges sessions that merely touch (TimeWindow.intersects uses <=), so a bid exactly
                // 10 000 ms after the previous one extends the session; weir starts a new one. With
                // -Dnexmark.q11SplitAtGap=true the gap is 9 999 ms and window_end + 1 is reported, which
                // gives weir's sessions (and the same rows) with the same operator.
                return bids.keyBy(b -> b.bidder, L)
                        .window(EventTimeSessionWindows.withGap(Duration.ofMillis(Q11_SPLIT_AT_GAP ? 9_999 : 10_000)))
                        .aggregate(new CountBids(), new Q11Emit(Q11_SPLIT_AT_GAP ? 1 : 0))
                        .name("q11-sessions").uid("q11-sessions");
            default:
                throw new IllegalArgumentException("unknown query " + query + " (known: q0 q1 q2 q3 q5 q7 q8 q11)");
        }
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 4) {
            System.err.println("usage: NexmarkFlink QUERY INPUT.jsonl rocksdb|hashmap CKPT_MS [OUTPUT.jsonl]");
            System.exit(2);
        }
        String query = args[0].toLowerCase(Locale.ROOT);
        String input = args[1];
        String backend = args[2];
        long ckptMs = Long.parseLong(args[3]);
        String output = args.length > 4 ? args[4] : null;
        int p = Integer.getInteger("nexmark.parallelism", 1);
        boolean objectReuse = Boolean.parseBoolean(System.getProperty("nexmark.objectReuse", "true"));
        String ckptDir = System.getProperty("nexmark.ckptDir", "/tmp/flink-nexmark-ckpt");

        // Same state/checkpoint settings as peers.PeersJob.
        Configuration conf = new Configuration();
        conf.setString("state.backend.type", backend);
        conf.setString("execution.checkpointing.storage", "filesystem");
        conf.setString("execution.checkpointing.dir", "file://" + ckptDir);
        if (ckptMs > 0) {
            conf.setString("execution.checkpointing.interval", ckptMs + " ms");
            conf.setString("execution.checkpointing.mode", "EXACTLY_ONCE");
            conf.setString("execution.checkpointing.unaligned.enabled", "false");
        }
        conf.setString("parallelism.default", String.valueOf(p));
        conf.setString("pipeline.object-reuse", String.valueOf(objectReuse));
        conf.setString("pipeline.generic-types", "false"); // fail instead of silently using Kryo
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment(conf);
        env.setParallelism(p);

        FileSource<String> source = FileSource
                .forRecordStreamFormat(new TextLineInputFormat(), new Path(new File(input).getAbsoluteFile().toURI()))
                .build(); // bounded: ends after the file, then a MAX watermark fires every window
        DataStream<Event> events = env.fromSource(source, WatermarkStrategy.noWatermarks(), "file")
                .flatMap(new Parse()).name("parse-json")
                .assignTimestampsAndWatermarks(WatermarkStrategy.<Event>forBoundedOutOfOrderness(Duration.ofMillis(4000))
                        .withTimestampAssigner((e, ts) -> e.dateTime)).name("watermarks");
        sink(build(query, events), output);

        long w0 = System.nanoTime();
        JobExecutionResult res = env.execute("nexmark-" + query);
        double secs = (System.nanoTime() - w0) / 1e9;
        double jobSecs = res.getNetRuntime(java.util.concurrent.TimeUnit.MILLISECONDS) / 1e3;
        double dataSecs = (END_NS.get() - FIRST_NS.get()) / 1e9;
        long n = EVENTS.get();
        long rows = ROWS.get();
        System.out.println("RESULT " + String.format(Locale.ROOT,
                "{\"peer\":\"flink\",\"query\":\"%s\",\"backend\":\"%s\",\"p\":%d,\"ckpt_ms\":%d,\"events\":%d,\"rows\":%d,"
                        + "\"secs\":%.3f,\"events_per_s\":%.0f,\"job_secs\":%.3f,\"job_events_per_s\":%.0f,"
                        + "\"data_secs\":%.3f,\"data_events_per_s\":%.0f,\"object_reuse\":%b,\"q11_split_at_gap\":%b,\"input\":\"%s\"}",
                query, backend, p, ckptMs, n, rows, secs, n / secs, jobSecs, n / jobSecs, dataSecs,
                n / dataSecs, objectReuse, Q11_SPLIT_AT_GAP, input.replace("\\", "\\\\").replace("\"", "\\\"")));
        System.out.flush();
        System.exit(0);
    }
}
