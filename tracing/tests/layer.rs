//! The layer against a real ring (an in-process `RingHost`: a Unix socket and a sealed memfd
//! as the sidecar makes them), read back with the ring's reader and decoded with the
//! generated `TracingRecord` type of `proto/ringside/v1/tracing.proto`.

mod support;

use std::time::Duration;

use proptest::prelude::*;
use ringside_proto::v1::tracing_field::Value;
use ringside_proto::v1::tracing_record::{Kind, Level};
use ringside_proto::v1::{TracingField, TracingRecord};
use ringside_tracing::{LayerError, RingsideLayer};
use support::{Frame, read_all, start_host};
use tracing_subscriber::layer::SubscriberExt;

fn field<'a>(record: &'a TracingRecord, name: &str) -> &'a Value {
    record
        .fields
        .iter()
        .find(|f| f.name == name)
        .and_then(|f| f.value.as_ref())
        .unwrap_or_else(|| panic!("no field {name} in {record:?}"))
}

fn connected(layer: &RingsideLayer) {
    assert!(
        layer.stats_handle().wait_connected(Duration::from_secs(10)),
        "the layer did not reach the host"
    );
}

#[derive(Debug)]
#[allow(dead_code)] // read through Debug
struct Point {
    x: i32,
    y: i32,
}

#[test]
fn events_and_spans_become_records() {
    let host = start_host(4096);
    let layer = RingsideLayer::connect(&host.socket).expect("layer");
    connected(&layer);
    let stats = layer.stats_handle();
    let subscriber = tracing_subscriber::registry().with(layer);
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    tracing::subscriber::with_default(subscriber, || {
        tracing::info!(user = "ada", attempts = 3u64, "logged in after {} tries", 3);
        tracing::warn!(
            neg = -5i64,
            ratio = 0.25f64,
            ok = false,
            point = ?Point { x: 1, y: -2 },
            shown = %"display",
            "mixed"
        );
        let outer = tracing::info_span!("request", path = "/x", id = 7u64);
        let _entered = outer.enter();
        let inner = tracing::debug_span!("db", table = "users");
        inner.in_scope(|| {
            std::thread::sleep(Duration::from_millis(2));
            tracing::error!(code = 500u64, "failed");
        });
        inner.record("table", "accounts");
        drop(inner);
    });
    let frames: Vec<Frame> = read_all(host.host.ring());
    let records: Vec<TracingRecord> = frames.iter().map(Frame::record).collect();
    for f in &frames {
        assert_eq!(
            f.topic, "tracing/layer",
            "topic is the prefix and the target"
        );
        assert_eq!(f.producer_id, std::process::id());
        assert!(f.timestamp_ns >= started);
    }
    // info, warn, error, db closes, request closes.
    assert_eq!(records.len(), 5, "{records:#?}");

    let info = &records[0];
    assert_eq!(info.kind, Kind::Event as i32);
    assert_eq!(info.level, Level::Info as i32);
    assert_eq!(info.target, "layer");
    assert_eq!(info.message, "logged in after 3 tries");
    assert_eq!(field(info, "user"), &Value::Str("ada".into()));
    assert_eq!(field(info, "attempts"), &Value::U64(3));
    assert_eq!(info.file, file!());
    assert!(info.line > 0);
    assert_eq!(info.span_id, 0, "not inside a span");
    assert!(!info.truncated);

    let warn = &records[1];
    assert_eq!(warn.level, Level::Warn as i32);
    assert_eq!(warn.message, "mixed");
    assert_eq!(field(warn, "neg"), &Value::I64(-5));
    assert_eq!(field(warn, "ratio"), &Value::F64(0.25));
    assert_eq!(field(warn, "ok"), &Value::Bool(false));
    assert_eq!(
        field(warn, "point"),
        &Value::Str("Point { x: 1, y: -2 }".into())
    );
    assert_eq!(field(warn, "shown"), &Value::Str("display".into()));
    let names: Vec<&str> = warn.fields.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(
        names,
        ["neg", "ratio", "ok", "point", "shown"],
        "recording order"
    );

    let error = &records[2];
    let db = &records[3];
    let request = &records[4];
    assert_eq!(error.level, Level::Error as i32);
    assert_eq!(field(error, "code"), &Value::U64(500));
    assert_eq!(
        error.span_id, db.span_id,
        "the event happened in the db span"
    );
    assert_eq!(error.span_name, "db");
    assert_eq!(info.span_name, "");

    assert_eq!(db.kind, Kind::SpanClose as i32);
    assert_eq!(db.name, "db");
    assert_eq!(db.level, Level::Debug as i32);
    assert_eq!(db.parent_span_id, request.span_id);
    assert_eq!(
        db.fields,
        vec![
            TracingField {
                name: "table".into(),
                value: Some(Value::Str("users".into()))
            },
            TracingField {
                name: "table".into(),
                value: Some(Value::Str("accounts".into()))
            },
        ],
        "fields at creation, then recorded later"
    );
    assert!(
        db.busy_ns >= 2_000_000,
        "entered for the 2 ms sleep: {db:?}"
    );
    assert!(db.duration_ns >= db.busy_ns);

    assert_eq!(request.kind, Kind::SpanClose as i32);
    assert_eq!(request.name, "request");
    assert_eq!(request.parent_span_id, 0);
    assert_eq!(field(request, "path"), &Value::Str("/x".into()));
    assert_eq!(field(request, "id"), &Value::U64(7));
    assert!(request.duration_ns >= db.duration_ns);
    assert!(request.busy_ns >= db.busy_ns, "entered throughout");

    let s = stats.stats();
    assert_eq!(s.written, 5);
    assert_eq!(s.truncated, 0);
    assert_eq!(
        s.dropped_not_connected + s.dropped_reentrant + s.encoding_errors,
        0
    );
}

#[test]
fn without_a_sidecar_records_are_counted_drops() {
    let dir = tempfile::tempdir().expect("temp dir");
    let layer = RingsideLayer::connect(dir.path().join("nobody.sock")).expect("layer");
    let stats = layer.stats_handle();
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        for i in 0..1000 {
            tracing::info!(i, "nobody listens");
        }
        tracing::info_span!("s").in_scope(|| {});
    });
    let s = stats.stats();
    assert_eq!(s.written, 0);
    assert_eq!(
        s.dropped_not_connected, 1001,
        "1000 events and one span close"
    );
}

#[test]
fn topics_follow_the_settings() {
    let host = start_host(4096);
    let prefixed = RingsideLayer::builder()
        .socket(&host.socket)
        .topic_prefix("logs.")
        .connect()
        .expect("layer");
    connected(&prefixed);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(prefixed), || {
        tracing::info!(target: "my_app::db", "a");
    });
    let fixed = RingsideLayer::builder()
        .socket(&host.socket)
        .fixed_topic("all-logs")
        .connect()
        .expect("layer");
    connected(&fixed);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(fixed), || {
        tracing::info!(target: "my_app::db", "b");
    });
    let frames = read_all(host.host.ring());
    let topics: Vec<&str> = frames.iter().map(|f| f.topic.as_str()).collect();
    assert_eq!(topics, ["logs.my_app::db", "all-logs"]);
    assert_eq!(frames[1].record().target, "my_app::db");
}

#[test]
fn bad_settings_are_refused_with_the_value() {
    let err = RingsideLayer::builder()
        .fixed_topic("")
        .connect()
        .expect_err("refused");
    assert!(
        matches!(err, LayerError::InvalidTopic { len: 0, .. }),
        "{err}"
    );
    let err = RingsideLayer::builder()
        .topic_prefix("p".repeat(255))
        .connect()
        .expect_err("refused");
    assert!(err.to_string().contains("255 bytes"), "{err}");
    let err = RingsideLayer::builder()
        .max_record_bytes(100)
        .connect()
        .expect_err("refused");
    assert!(err.to_string().contains("100"), "{err}");
}

#[test]
fn long_targets_are_cut_to_a_valid_topic() {
    let host = start_host(4096);
    let layer = RingsideLayer::connect(&host.socket).expect("layer");
    connected(&layer);
    tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
        // A 300-byte target made of 3-byte characters.
        tracing::info!(target: "ééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééééé", "x");
    });
    let frames = read_all(host.host.ring());
    assert_eq!(frames.len(), 1);
    assert!(frames[0].topic.len() <= 255);
    assert!(frames[0].topic.starts_with("tracing/é"));
    let record = frames[0].record();
    assert!(record.truncated, "the target was cut");
    assert!(record.target.len() <= 255);
}

/// The record limit: a message longer than the limit is cut at a character boundary,
/// marked, and the record fits the limit; a ring whose max payload is below the configured
/// limit lowers it.
#[test]
fn long_records_are_cut_to_the_limit() {
    for (max_payload, limit) in [(4096, 512usize), (600, 4096)] {
        let host = start_host(max_payload);
        let layer = RingsideLayer::builder()
            .socket(&host.socket)
            .max_record_bytes(limit)
            .connect()
            .expect("layer");
        connected(&layer);
        let stats = layer.stats_handle();
        let long = "ü".repeat(2000);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!(after = 1u64, "{long}");
        });
        let frames = read_all(host.host.ring());
        let cap = limit.min(max_payload as usize);
        assert!(
            frames[0].payload.len() <= cap,
            "{} > {cap}",
            frames[0].payload.len()
        );
        let record = frames[0].record();
        assert!(record.truncated);
        assert!(!record.message.is_empty() && long.starts_with(&record.message));
        assert_eq!(stats.stats().truncated, 1);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the values, a record decodes; unless marked truncated it carries them
    /// exactly, and when cut, the text is a prefix and the record fits the limit.
    #[test]
    fn any_values_decode(
        message in "\\PC{0,600}",
        text in "\\PC{0,300}",
        signed in any::<i64>(),
        unsigned in any::<u64>(),
        float in any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan()),
        flag in any::<bool>(),
        limit in 512usize..1500,
    ) {
        let host = start_host(4096);
        let layer = RingsideLayer::builder()
            .socket(&host.socket)
            .max_record_bytes(limit)
            .connect()
            .expect("layer");
        connected(&layer);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(layer), || {
            tracing::info!(text = text.as_str(), signed, unsigned, float, flag, "{message}");
        });
        let frames = read_all(host.host.ring());
        prop_assert_eq!(frames.len(), 1);
        prop_assert!(frames[0].payload.len() <= limit);
        let record = frames[0].record();
        prop_assert!(message.starts_with(&record.message));
        if !record.truncated {
            prop_assert_eq!(&record.message, &message);
            prop_assert_eq!(field(&record, "text"), &Value::Str(text.clone()));
            prop_assert_eq!(field(&record, "signed"), &Value::I64(signed));
            prop_assert_eq!(field(&record, "unsigned"), &Value::U64(unsigned));
            prop_assert_eq!(field(&record, "float"), &Value::F64(float));
            prop_assert_eq!(field(&record, "flag"), &Value::Bool(flag));
        }
    }
}

/// Two ringside layers on one registry (say, one per topic scheme) both write every record,
/// and a span's fields and timings are kept once.
#[test]
fn two_layers_on_one_registry() {
    let host = start_host(4096);
    let a = RingsideLayer::builder()
        .socket(&host.socket)
        .fixed_topic("a")
        .connect()
        .expect("layer");
    let b = RingsideLayer::builder()
        .socket(&host.socket)
        .fixed_topic("b")
        .connect()
        .expect("layer");
    connected(&a);
    connected(&b);
    let subscriber = tracing_subscriber::registry().with(a).with(b);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!("s", x = 1u64);
        span.in_scope(|| tracing::info!("inside"));
        span.record("x", 2u64);
    });
    let frames = read_all(host.host.ring());
    let mut topics: Vec<&str> = frames.iter().map(|f| f.topic.as_str()).collect();
    topics.sort_unstable();
    assert_eq!(topics, ["a", "a", "b", "b"]);
    for frame in frames
        .iter()
        .filter(|f| f.record().kind == Kind::SpanClose as i32)
    {
        let values: Vec<Value> = frame
            .record()
            .fields
            .into_iter()
            .filter_map(|f| f.value)
            .collect();
        assert_eq!(values, [Value::U64(1), Value::U64(2)], "recorded once");
    }
}

/// `ringside tail` decodes frames under the proto crate's prefix: the layer's default.
#[test]
fn default_prefix_is_the_one_tail_decodes() {
    assert_eq!(
        ringside_tracing::DEFAULT_TOPIC_PREFIX,
        ringside_proto::TRACING_TOPIC_PREFIX
    );
}
