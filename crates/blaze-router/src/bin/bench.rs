//! `blaze-router-bench`: the router against HAProxy under the same `wrk` load.
//!
//! Starts four `blaze-test-upstream` processes, two HAProxy (Debian's `haproxy`) instances and
//! the router, all round robin over the same four upstreams with keep-alive and the same
//! thread count, then runs `wrk` against one upstream directly, through HAProxy and through
//! the router, and prints requests/s and p50/p99 latency for each plus the router-to-HAProxy
//! ratios. Needs `wrk` and `haproxy` on the PATH (`apt-get install -y wrk haproxy`).
//!
//! Fairness: the same `wrk` threads and connections for every target, the same thread count
//! for both proxies, both pinned to the same CPUs, a warm-up run before every measured one,
//! and `--rounds` rounds in which the targets take turns, each reported by its median, so a
//! burst of load from elsewhere on the machine does not land on one target only. The ratio is
//! also given as the median of each round's own ratio (router and HAProxy measured minutes
//! apart can see different neighbours; within a round they run less than a minute apart).
//!
//! Placement (`--cpus`): by default nothing is pinned (`none`), as a user's pods run: the
//! scheduler places the proxy, `wrk` and the upstreams freely, which is what the router's
//! figures must hold up under. `auto` pins the proxies to the last `--threads` CPUs and `wrk`
//! and the upstreams to the others (when the machine has more), which keeps the scheduler
//! from giving either proxy a quieter core for part of a run and so narrows the spread
//! between runs; a `taskset -c` CPU list pins the proxies there. Several placements, comma
//! separated (`--cpus none,auto`), are measured one after the other, each on fresh processes.
//!
//! Besides throughput and latency, each run reports the CPU time the proxy process spent per
//! request (user and system, from `/proc`): when the machine, not the proxy, limits the
//! throughput (on two cores `wrk`, four upstreams and the proxy keep both busy), this is
//! where a costlier proxy shows. The router adds `x-forwarded-for`, `x-forwarded-proto` and `x-request-id`
//! to every request (and the request id to every response); HAProxy is measured twice: as
//! configured by default (`haproxy`) and doing the same header work (`haproxy+headers`:
//! `option forwardfor`, `X-Forwarded-Proto`, a unique id in `X-Request-ID` both ways).
//!
//! `cargo run --release -p blaze-router --bin blaze-router-bench -- --duration 10`

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;

/// Benchmark the router against HAProxy.
#[derive(Parser, Debug)]
struct Args {
    /// Worker threads for the router and HAProxy alike.
    #[arg(long, env = "BLAZE_BENCH_THREADS", default_value_t = 1)]
    threads: usize,
    /// wrk threads.
    #[arg(long, env = "BLAZE_BENCH_WRK_THREADS", default_value_t = 1)]
    wrk_threads: usize,
    /// wrk connections.
    #[arg(long, env = "BLAZE_BENCH_CONNECTIONS", default_value_t = 32)]
    connections: usize,
    /// Seconds per wrk run.
    #[arg(long, env = "BLAZE_BENCH_DURATION", default_value_t = 10)]
    duration: u64,
    /// Rounds; the targets take turns in each, and each is reported by its median.
    #[arg(long, env = "BLAZE_BENCH_ROUNDS", default_value_t = 5)]
    rounds: usize,
    /// Placements to measure, comma separated: `none` (nothing pinned), `auto` (the proxies
    /// on the last `--threads` CPUs, `wrk` and the upstreams on the others, if the machine
    /// has more) or a CPU list for the proxies (`taskset -c` syntax, e.g. `1`).
    #[arg(long, env = "BLAZE_BENCH_CPUS", default_value = "none", value_delimiter = ',')]
    cpus: Vec<String>,
    /// Where to write the results (text) besides stdout.
    #[arg(long, env = "BLAZE_BENCH_OUT", default_value = "target/blaze-router-bench.txt")]
    out: PathBuf,
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug, Clone, Copy)]
struct Run {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// CPU time of the serving process per request, in microseconds.
    cpu_us: f64,
}

/// Where processes run: the proxies' CPUs and the load's (`wrk` and the upstreams), each in
/// `taskset -c` syntax, empty for anywhere.
#[derive(Debug, Clone, Default)]
struct Pins {
    proxies: String,
    load: String,
}

/// Something `wrk` is pointed at: its name, address and the process that serves it.
struct Target {
    name: &'static str,
    addr: String,
    pid: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    for tool in ["wrk", "haproxy"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()?
            .code()
            != Some(0)
        {
            bail!("{tool} is not installed: apt-get install -y wrk haproxy");
        }
    }
    let bin_dir = std::env::current_exe()?.parent().context("binary directory")?.to_path_buf();
    build_siblings(&bin_dir)?;
    let mut report = String::new();
    for cpus in &args.cpus {
        let pins = pin_set(cpus, args.threads);
        let part = placement(&args, &pins, &bin_dir)?;
        print!("{part}");
        report.push_str(&part);
    }
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, &report)?;
    Ok(())
}

/// Measures one placement on fresh processes and renders its report.
fn placement(args: &Args, pins: &Pins, bin_dir: &Path) -> anyhow::Result<String> {
    let mut keep = Vec::new();
    let mut ups = Vec::new();
    for i in 0..4 {
        let (child, addr) = upstream(pins, bin_dir, i)?;
        keep.push(child);
        ups.push(addr);
    }
    let dir = std::env::temp_dir().join(format!("blaze-router-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let direct = Target { name: "direct (1 upstream)", addr: ups[0].clone(), pid: keep[0].0.id() };
    let mut targets = vec![direct];
    targets.extend(start_proxies(args, pins, bin_dir, &dir, &ups, &mut keep)?);
    let report = measure(args, pins, &targets);
    drop(keep);
    let _ = std::fs::remove_dir_all(&dir);
    report
}

/// Starts both HAProxy instances and the router.
fn start_proxies(
    args: &Args,
    pins: &Pins,
    bin_dir: &Path,
    dir: &Path,
    ups: &[String],
    keep: &mut Vec<Kill>,
) -> anyhow::Result<Vec<Target>> {
    let mut targets = Vec::new();
    for (name, headers) in [("haproxy", false), ("haproxy+headers", true)] {
        let addr = free_addr()?;
        let cfg = dir.join(format!("{name}.cfg"));
        let child = haproxy(args, pins, &cfg, &addr, ups, headers)?;
        targets.push(Target { name, addr, pid: child.0.id() });
        keep.push(child);
    }
    let addr = free_addr()?;
    let child = router(args, pins, bin_dir, dir, &addr, ups)?;
    targets.push(Target { name: "blaze-router", addr, pid: child.0.id() });
    keep.push(child);
    for t in &targets {
        wait_ready(&t.addr)?;
    }
    Ok(targets)
}

/// Runs every round and renders the report.
fn measure(args: &Args, pins: &Pins, targets: &[Target]) -> anyhow::Result<String> {
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); targets.len()];
    for round in 0..args.rounds.max(1) {
        // Rotate who goes first, so no target always follows the same one.
        for k in 0..targets.len() {
            let i = (k + round) % targets.len();
            // A short warm-up fills connection pools.
            wrk(pins, &targets[i], args, 2)?;
            runs[i].push(wrk(pins, &targets[i], args, args.duration)?);
        }
    }
    let mut report = format!(
        "wrk -t{} -c{} -d{}s, {} round(s), medians; router and haproxy with {} thread(s), \
         pinned to {}; wrk and the 4 upstreams (round robin, keep-alive) {}; cpu: the \
         serving process's user+system time per request\n",
        args.wrk_threads,
        args.connections,
        args.duration,
        args.rounds.max(1),
        args.threads,
        if pins.proxies.is_empty() { "no CPU (not pinned)" } else { &pins.proxies },
        if pins.load.is_empty() { "not pinned".to_owned() } else { format!("on {}", pins.load) },
    );
    let med: Vec<Run> = runs.iter().map(|r| median(r)).collect();
    let cpu: Vec<f64> =
        runs.iter().map(|r| median_of(&r.iter().map(|r| r.cpu_us).collect::<Vec<_>>())).collect();
    for ((t, (r, all)), cpu) in targets.iter().zip(med.iter().zip(&runs)).zip(&cpu) {
        let each: Vec<String> = all.iter().map(|r| format!("{:.0}", r.rps)).collect();
        report.push_str(&format!(
            "{:<20} {:>9.0} req/s   p50 {:>7.3} ms   p99 {:>7.3} ms   cpu {:>6.2} us/req   \
             (rounds: {})\n",
            t.name,
            r.rps,
            r.p50_ms,
            r.p99_ms,
            cpu,
            each.join(", ")
        ));
    }
    let (direct, hap, haph, rtr) = (med[0], med[1], med[2], med[3]);
    report.push_str(
        "round   router req/s   p99 ms  cpu us | haproxy req/s   p99 ms  cpu us | \
         router/haproxy  req/s    p99    cpu\n",
    );
    for (k, (r, h)) in runs[3].iter().zip(&runs[1]).enumerate() {
        report.push_str(&format!(
            "{:>5} {:>14.0} {:>8.3} {:>7.2} | {:>13.0} {:>8.3} {:>7.2} | {:>21.3} {:>6.3} {:>6.3}\n",
            k + 1,
            r.rps,
            r.p99_ms,
            r.cpu_us,
            h.rps,
            h.p99_ms,
            h.cpu_us,
            r.rps / h.rps,
            r.p99_ms / h.p99_ms,
            r.cpu_us / h.cpu_us,
        ));
    }
    // Each figure's ratio within a round (the two ran less than a minute apart), then the
    // median over rounds.
    let ratio = |other: usize, f: fn(&Run) -> f64| -> f64 {
        let v: Vec<f64> = runs[3].iter().zip(&runs[other]).map(|(r, o)| f(r) / f(o)).collect();
        median_of(&v)
    };
    for (other, name) in [(1, "haproxy"), (2, "haproxy+headers")] {
        report.push_str(&format!(
            "median of per-round router/{name} ratios: throughput {:.3}x, p99 {:.3}x, cpu per \
             request {:.3}x\n",
            ratio(other, |r| r.rps),
            ratio(other, |r| r.p99_ms),
            ratio(other, |r| r.cpu_us),
        ));
    }
    report.push_str(&format!(
        "router/haproxy throughput ratio of medians {:.3} (router/haproxy+headers {:.3}); added \
         p99 over direct: haproxy {:.3} ms, haproxy+headers {:.3} ms, router {:.3} ms\n",
        rtr.rps / hap.rps,
        rtr.rps / haph.rps,
        hap.p99_ms - direct.p99_ms,
        haph.p99_ms - direct.p99_ms,
        rtr.p99_ms - direct.p99_ms
    ));
    report.push_str(&format!(
        "proxy cpu per request (median of rounds): router {:.2} us, haproxy {:.2} us, \
         haproxy+headers {:.2} us\n",
        cpu[3], cpu[1], cpu[2],
    ));
    Ok(report)
}

/// Where to pin (`taskset -c` syntax), or empty sets for none.
fn pin_set(cpus: &str, threads: usize) -> Pins {
    let n = std::thread::available_parallelism().map_or(1, usize::from);
    let have_taskset = || {
        Command::new("sh")
            .args(["-c", "command -v taskset"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let range = |a: usize, b: usize| if a == b { a.to_string() } else { format!("{a}-{b}") };
    match cpus {
        "none" | "" => Pins::default(),
        "auto" if n > threads && have_taskset() => {
            Pins { proxies: range(n - threads, n - 1), load: range(0, n - threads - 1) }
        }
        "auto" => Pins::default(),
        set => Pins { proxies: set.to_owned(), load: String::new() },
    }
}

/// The median of `v` (the upper one of an even count).
fn median_of(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// The run with the median throughput (its latencies with it).
fn median(runs: &[Run]) -> Run {
    let mut v = runs.to_vec();
    v.sort_by(|a, b| a.rps.total_cmp(&b.rps));
    v[v.len() / 2]
}

/// A command, under `taskset -c CPUS` when `cpus` is not empty (`taskset` execs the
/// program: the child's process id is the program's).
fn pinned(cpus: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    if cpus.is_empty() {
        return Command::new(program);
    }
    let mut c = Command::new("taskset");
    c.args(["-c", cpus]).arg(program);
    c
}

/// `cargo run --bin blaze-router-bench` builds only this binary: build the router and the
/// test upstream beside it too, so the benchmark never runs a missing or stale router.
fn build_siblings(bin_dir: &Path) -> anyhow::Result<()> {
    let Ok(cargo) = std::env::var("CARGO") else {
        return Ok(());
    };
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", "blaze-router", "--bin", "blaze-router"]);
    cmd.args(["--bin", "blaze-test-upstream"]);
    if bin_dir.file_name().is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().context("building blaze-router and blaze-test-upstream")?;
    anyhow::ensure!(status.success(), "building blaze-router and blaze-test-upstream failed");
    Ok(())
}

fn upstream(pins: &Pins, bin_dir: &Path, i: usize) -> anyhow::Result<(Kill, String)> {
    let mut child = pinned(&pins.load, bin_dir.join("blaze-test-upstream"))
        .args(["--listen", "127.0.0.1:0", "--name", &format!("u{i}"), "--threads", "1"])
        .stdout(Stdio::piped())
        .spawn()
        .context(
            "starting blaze-test-upstream (build it: cargo build --release -p blaze-router)",
        )?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?).read_line(&mut line)?;
    let addr = line.trim().strip_prefix("listening on ").context("upstream address")?.to_owned();
    Ok((Kill(child), addr))
}

fn free_addr() -> anyhow::Result<String> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.to_string())
}

fn haproxy(
    args: &Args,
    pins: &Pins,
    path: &Path,
    listen: &str,
    ups: &[String],
    headers: bool,
) -> anyhow::Result<Kill> {
    let servers: String =
        ups.iter().enumerate().map(|(i, a)| format!("    server u{i} {a}\n")).collect();
    // The router's header work: the client in x-forwarded-for, x-forwarded-proto, and a
    // request id kept or made, sent on and returned.
    let same_work = "    option forwardfor\n\
         \x20   http-request set-header X-Forwarded-Proto http unless { req.hdr(x-forwarded-proto) -m found }\n\
         \x20   unique-id-format %{+X}o\\ %ci:%cp_%fi:%fp_%Ts_%rt:%pid\n\
         \x20   http-request set-header X-Request-ID %[unique-id] unless { req.hdr(x-request-id) -m found }\n\
         \x20   http-after-response set-header X-Request-ID %[unique-id]\n";
    let cfg = format!(
        "global\n    nbthread {}\n    maxconn 4096\n\
         defaults\n    mode http\n    option http-keep-alive\n    http-reuse always\n\
         \x20   timeout connect 2s\n    timeout client 60s\n    timeout server 60s\n\
         frontend fe\n    bind {listen}\n{}    default_backend be\n\
         backend be\n    balance roundrobin\n{servers}",
        args.threads,
        if headers { same_work } else { "" },
    );
    std::fs::write(path, cfg)?;
    let child = pinned(&pins.proxies, "haproxy")
        .arg("-f")
        .arg(path)
        .stdout(Stdio::null())
        .spawn()
        .context("starting haproxy")?;
    Ok(Kill(child))
}

fn router(
    args: &Args,
    pins: &Pins,
    bin_dir: &Path,
    dir: &Path,
    listen: &str,
    ups: &[String],
) -> anyhow::Result<Kill> {
    let eps: String = ups.iter().map(|a| format!("- address: {a}\n")).collect();
    let path = dir.join("routing.yaml");
    std::fs::write(&path, format!("strategy: roundRobin\nendpoints:\n{eps}"))?;
    let child = pinned(&pins.proxies, bin_dir.join("blaze-router"))
        .args(["--listen", listen, "--worker-threads", &args.threads.to_string(), "--config"])
        .arg(&path)
        .env("RUST_LOG", "warn")
        .spawn()
        .context("starting blaze-router")?;
    Ok(Kill(child))
}

fn wait_ready(addr: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("{addr} did not come up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

fn wrk(pins: &Pins, target: &Target, a: &Args, secs: u64) -> anyhow::Result<Run> {
    let before = cpu_ticks(target.pid)?;
    let out = pinned(&pins.load, "wrk")
        .args([
            "-t",
            &a.wrk_threads.to_string(),
            "-c",
            &a.connections.to_string(),
            "-d",
            &format!("{secs}s"),
            "--latency",
        ])
        .arg(format!("http://{}/", target.addr))
        .output()
        .context("running wrk")?;
    let ticks = cpu_ticks(target.pid)? - before;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut run = parse_wrk(&text).with_context(|| format!("unexpected wrk output:\n{text}"))?;
    let requests = requests(&text).context("no request count in wrk's output")?;
    run.cpu_us = ticks as f64 * 1e6 / clock_ticks_per_second() / requests.max(1) as f64;
    Ok(run)
}

/// User plus system CPU time of process `pid` (all its threads), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces, so split after its ')'): state
    // is the 3rd field, utime the 14th and stime the 15th.
    let rest = stat.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| f.get(i - 3).and_then(|v| v.parse::<u64>().ok()).context("stat field");
    Ok(field(14)? + field(15)?)
}

/// The kernel's clock ticks per second for `/proc` times (`getconf CLK_TCK`, 100 nearly
/// everywhere).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// The request count of wrk's `N requests in T` line.
fn requests(text: &str) -> Option<u64> {
    text.lines().find(|l| l.contains(" requests in "))?.split_whitespace().next()?.parse().ok()
}

fn parse_wrk(text: &str) -> Option<Run> {
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
    };
    let rps = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    if text.contains("Non-2xx") || text.contains("Socket errors") {
        eprintln!("warning: wrk saw errors:\n{text}");
    }
    Some(Run { rps, p50_ms: ms(field("50%")?)?, p99_ms: ms(field("99%")?)?, cpu_us: 0.0 })
}

fn ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let t = "Running 1s test\n  Latency Distribution\n     50%  512.00us\n     75%    1.00ms\n     99%    2.50ms\n\
                 12345 requests in 1.00s\nRequests/sec:  12345.67\nTransfer/sec: 1MB\n";
        let r = parse_wrk(t).unwrap();
        assert_eq!(r.rps, 12345.67);
        assert!((r.p50_ms - 0.512).abs() < 1e-9);
        assert_eq!(r.p99_ms, 2.5);
        assert_eq!(requests(t), Some(12345));
    }

    #[test]
    fn reads_this_process_cpu_time() {
        let start = cpu_ticks(std::process::id()).unwrap();
        let t0 = Instant::now();
        let mut x = 0u64;
        while t0.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        // 300 ms of spinning is about 30 ticks; the clock only needs to have moved.
        assert!(cpu_ticks(std::process::id()).unwrap() > start);
    }
}
