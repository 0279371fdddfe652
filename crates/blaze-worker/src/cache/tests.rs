use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use prometheus_client::registry::Registry;

use super::*;

fn key(i: u32) -> Key {
    let sampling = SamplingParams::default();
    Request {
        model: "m",
        endpoint: "chat",
        prompt: &[i],
        max_tokens: 4,
        sampling: &sampling,
        stop: &[],
        stream: false,
        include_usage: false,
    }
    .key()
}

fn metric(registry: &Registry, line_start: &str) -> f64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0)
}

#[test]
fn the_key_covers_what_decides_the_answer_and_only_that() {
    let greedy = SamplingParams::default();
    let base = Request {
        model: "m",
        endpoint: "chat",
        prompt: &[1, 2, 3],
        max_tokens: 8,
        sampling: &greedy,
        stop: &[],
        stream: false,
        include_usage: false,
    };
    assert_eq!(base.key(), Request { ..base }.key());
    let seeded = SamplingParams { temperature: 0.7, seed: Some(1), ..SamplingParams::default() };
    let stop = ["x".to_owned()];
    for other in [
        Request { model: "n", ..base },
        Request { endpoint: "completion", ..base },
        Request { prompt: &[1, 2], ..base },
        Request { max_tokens: 9, ..base },
        Request { sampling: &seeded, ..base },
        Request { stop: &stop, ..base },
        Request { stream: true, ..base },
        Request { include_usage: true, ..base },
    ] {
        assert_ne!(base.key(), other.key(), "{other:?}");
    }
    assert_eq!(Key::from_hex(&base.key().hex()), Some(base.key()));
}

#[test]
fn only_greedy_or_seeded_requests_are_deterministic() {
    let req = |sampling: &SamplingParams| {
        Request {
            model: "m",
            endpoint: "chat",
            prompt: &[],
            max_tokens: 1,
            sampling,
            stop: &[],
            stream: false,
            include_usage: false,
        }
        .deterministic()
    };
    assert!(req(&SamplingParams::default()));
    assert!(req(&SamplingParams { temperature: 0.8, seed: Some(3), ..Default::default() }));
    assert!(req(&SamplingParams { temperature: 0.8, top_k: 1, ..Default::default() }));
    assert!(!req(&SamplingParams { temperature: 0.8, ..Default::default() }));
}

#[test]
fn answers_encode_and_decode() {
    let whole = Answer::Whole(Bytes::from_static(b"{\"id\":1}"));
    let stream = Answer::Stream(vec![Bytes::from("a"), Bytes::new(), Bytes::from("[DONE]")]);
    for a in [whole, stream, Answer::Stream(vec![])] {
        assert_eq!(Answer::decode(a.encode()), Some(a));
    }
    assert_eq!(Answer::decode(Bytes::from_static(&[1, 9, 0, 0, 0, b'x'])), None);
    assert_eq!(Answer::decode(Bytes::from_static(&[7])), None);
}

#[test]
fn memory_stays_within_its_bytes_and_evicts_the_least_recently_used() {
    let m = Memory::new(10 * (100 + memory::OVERHEAD_FOR_TESTS));
    let far = Instant::now() + Duration::from_secs(60);
    let mut evicted = 0;
    for i in 0..1000 {
        evicted += m.put(key(i), Bytes::from(vec![0u8; 100]), far);
        // Key 0 used after every insert stays.
        assert!(m.get(&key(0), Instant::now()).is_some(), "key 0 evicted at {i}");
        let (bytes, entries) = m.usage();
        assert!(bytes <= 10 * (100 + memory::OVERHEAD_FOR_TESTS), "{bytes} bytes at {i}");
        assert!(entries <= 10);
    }
    assert_eq!(evicted, 990);
    assert!(m.get(&key(998), Instant::now()).is_some());
    assert!(m.get(&key(5), Instant::now()).is_none());
    // Larger than the whole level: not kept, nothing evicted.
    assert_eq!(m.put(key(5000), Bytes::from(vec![0u8; 5000]), far), 0);
    assert!(m.get(&key(5000), Instant::now()).is_none());
}

#[test]
fn memory_entries_expire() {
    let m = Memory::new(1 << 20);
    let now = Instant::now();
    m.put(key(1), Bytes::from("a"), now + Duration::from_millis(10));
    assert!(m.get(&key(1), now).is_some());
    assert!(m.get(&key(1), now + Duration::from_millis(10)).is_none());
    assert_eq!(m.usage(), (0, 0));
}

#[test]
fn disk_answers_survive_a_restart_and_stay_within_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let later = SystemTime::now() + Duration::from_secs(600);
    let per = disk::cost((disk::HEADER_FOR_TESTS + 1000) as u64);
    {
        let d = Disk::open(dir.path(), 20 * per).unwrap();
        let mut evicted = 0;
        for i in 0..200 {
            evicted += d.put(key(i), &[i as u8; 1000], later).unwrap();
            assert!(d.usage().0 <= 20 * per);
        }
        assert_eq!(evicted, 180);
        let files = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(files, 20, "evicted answers leave no files");
    }
    // A leftover temporary file from a write cut short.
    std::fs::write(dir.path().join("abc.tmp.1.2"), b"half").unwrap();
    let d = Disk::open(dir.path(), 20 * per).unwrap();
    assert!(!dir.path().join("abc.tmp.1.2").exists());
    assert_eq!(d.usage(), (20 * per, 20));
    match d.get(&key(199), SystemTime::now()) {
        disk::Found::Hit(b, _) => assert_eq!(&b[..], &[199u8; 1000][..]),
        other => panic!("{other:?}"),
    }
    assert!(matches!(d.get(&key(0), SystemTime::now()), disk::Found::Miss));
    // Expired answers are misses, and go.
    d.put(key(7), b"old", SystemTime::now() + Duration::from_secs(1)).unwrap();
    let after = SystemTime::now() + Duration::from_secs(5);
    assert!(matches!(d.get(&key(7), after), disk::Found::Miss));
    assert!(!dir.path().join(format!("{}.entry", key(7).hex())).exists());
}

#[test]
fn a_corrupted_disk_answer_is_dropped_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let d = Disk::open(dir.path(), 1 << 20).unwrap();
    let later = SystemTime::now() + Duration::from_secs(600);
    d.put(key(1), b"the answer", later).unwrap();
    let path = dir.path().join(format!("{}.entry", key(1).hex()));
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(d.get(&key(1), SystemTime::now()), disk::Found::Corrupt));
    assert!(!path.exists());
    assert!(matches!(d.get(&key(1), SystemTime::now()), disk::Found::Miss));
    assert_eq!(d.usage(), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_l2_hit_fills_l1_and_every_level_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config {
        memory_bytes: 1 << 20,
        disk_bytes: 1 << 20,
        dir: Some(dir.path().to_path_buf()),
        ttl: Duration::from_secs(60),
        redis: None,
    };
    let answer = Answer::Stream(vec![Bytes::from("{\"x\":1}"), Bytes::from("[DONE]")]);
    {
        let mut registry = Registry::default();
        let cache = ResponseCache::open(&config, &mut registry).unwrap().unwrap();
        assert_eq!(cache.get(key(1)).await, None);
        cache.put(key(1), &answer);
        assert_eq!(cache.get(key(1)).await, Some(answer.clone()));
        assert_eq!(
            metric(&registry, "blaze_response_cache_lookups_total{level=\"l1\",outcome=\"hit\"}"),
            1.0
        );
        // The disk write runs in the background: wait for its file.
        let disk = cache.disk.clone().unwrap();
        blaze_testing::eventually("the answer on disk", 10, async || {
            (disk.usage().1 == 1).then_some(())
        })
        .await;
    }
    // A new process: L1 is empty, L2 has the answer and hands it up.
    let mut registry = Registry::default();
    let cache = ResponseCache::open(&config, &mut registry).unwrap().unwrap();
    assert_eq!(cache.get(key(1)).await, Some(answer.clone()));
    assert_eq!(
        metric(&registry, "blaze_response_cache_lookups_total{level=\"l2\",outcome=\"hit\"}"),
        1.0
    );
    assert_eq!(cache.get(key(1)).await, Some(answer));
    assert_eq!(
        metric(&registry, "blaze_response_cache_lookups_total{level=\"l1\",outcome=\"hit\"}"),
        1.0
    );
    assert!(metric(&registry, "blaze_response_cache_bytes{level=\"l1\"}") > 0.0);
}

#[test]
fn no_levels_no_cache_and_a_disk_level_needs_a_folder() {
    let mut registry = Registry::default();
    let off = Config {
        memory_bytes: 0,
        disk_bytes: 0,
        dir: None,
        ttl: Duration::from_secs(1),
        redis: None,
    };
    assert!(ResponseCache::open(&off, &mut registry).unwrap().is_none());
    let no_dir = Config { disk_bytes: 10, ..off };
    let err = ResponseCache::open(&no_dir, &mut registry).unwrap_err().to_string();
    assert!(err.contains("--response-cache-dir"), "{err}");
}
