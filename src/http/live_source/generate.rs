//! The loop the live source repeats: made once with Debian's `ffmpeg`
//! (a `testsrc2` pattern with a burned-in frame counter and loop clock, VP9
//! in fragmented MP4, 1 s segments that each start on a key frame), kept in
//! a cache directory named after the ffmpeg version and command, then read
//! into memory and checked box by box.
//!
//! Generation runs on its own thread (never on a runtime: a server, or a
//! test's runtime, may stop before it ends) and at most once per process for
//! a cache directory: servers in one process share it. ffmpeg writes into a
//! temporary directory that is renamed into place when complete, so two
//! processes generating at once, or one killed halfway, never leave a
//! partial loop behind.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};

use super::mp4::{self, Mp4Error, Shift, Track};

/// What the loop is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spec {
    /// Frame size.
    pub width: u32,
    /// Frame size.
    pub height: u32,
    /// Frames per second (and the key frame interval: one per segment).
    pub fps: u32,
    /// Segment duration, seconds.
    pub segment_secs: u32,
    /// Segments in the loop.
    pub segments: u32,
    /// Target bitrate, kbit/s.
    pub kbps: u32,
}

/// The loop: 20 s of 640×360 at 30 fps in 1 s segments, ~250 kbit/s.
pub(crate) const SPEC: Spec = Spec { width: 640, height: 360, fps: 30, segment_secs: 1, segments: 20, kbps: 250 };

/// The font of the burned-in text (Debian's `fonts-dejavu-core`).
pub(crate) const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// How long ffmpeg may take before it is killed (it takes seconds).
const FFMPEG_TIMEOUT: Duration = Duration::from_secs(300);

/// What to install when ffmpeg or the font is missing.
pub(crate) const INSTALL_HINT: &str = "apt-get install ffmpeg fonts-dejavu-core";

/// The loop in memory: the init segment and the media segments, checked.
pub(crate) struct Loop {
    /// The init segment (`ftyp` + `moov`).
    pub init: Bytes,
    /// The media segments, in order; segment `k` starts at decode time
    /// `k · segment_ticks`.
    pub segments: Vec<Bytes>,
    /// The tracks of the init segment (one video track).
    pub tracks: Vec<Track>,
    /// Ticks per second of the video track.
    pub timescale: u32,
    /// Ticks per segment.
    pub segment_ticks: u64,
    /// Where it is cached.
    pub dir: PathBuf,
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("init_bytes", &self.init.len())
            .field("segments", &self.segments.len())
            .field("timescale", &self.timescale)
            .field("segment_ticks", &self.segment_ticks)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Loop {
    /// Media segment `n` of the endless stream: loop segment `n mod K`,
    /// retimed so that it starts at decode time `n · segment_ticks`, its
    /// fragment numbered `n + 1`.
    pub(crate) fn segment(&self, n: u64) -> Result<Vec<u8>, Mp4Error> {
        let k = self.segments.len() as u64;
        let loop_ticks = k * self.segment_ticks;
        let ticks = (n / k).checked_mul(loop_ticks).ok_or(Mp4Error::Overflow("the segment's decode time"))?;
        let shift = Shift { ticks, timescale: self.timescale };
        mp4::retime(&self.segments[(n % k) as usize], &self.tracks, (n as u32).wrapping_add(1), shift)
    }

    /// Reads and checks the loop in `dir`: one video track; `spec.segments`
    /// segments of one fragment each, segment `k` at decode time
    /// `k · segment_ticks`, exactly one segment long and starting on a key
    /// frame.
    pub(crate) fn load(dir: &Path, spec: &Spec) -> Result<Loop, String> {
        let read = |name: &str| std::fs::read(dir.join(name)).map_err(|e| format!("{}: {e}", dir.join(name).display()));
        let init = read("init.mp4")?;
        let tracks = mp4::init_tracks(&init).map_err(|e| format!("init.mp4: {e}"))?;
        let [video] = tracks[..] else {
            return Err(format!("init.mp4 has {} tracks, expected one (video)", tracks.len()));
        };
        let segment_ticks = u64::from(video.timescale) * u64::from(spec.segment_secs);
        let mut segments = Vec::with_capacity(spec.segments as usize);
        for k in 0..u64::from(spec.segments) {
            let name = format!("seg{k}.m4s");
            let bytes = read(&name)?;
            let frags = mp4::fragments(&bytes, &tracks).map_err(|e| format!("{name}: {e}"))?;
            let [mp4::Fragment { tracks: ref trafs, .. }] = frags[..] else {
                return Err(format!("{name}: {} fragments, expected one", frags.len()));
            };
            let [t] = trafs[..] else {
                return Err(format!("{name}: {} track fragments, expected one", trafs.len()));
            };
            if t.decode_time != k * segment_ticks || t.duration != segment_ticks || !t.starts_with_sync {
                return Err(format!(
                    "{name}: decode time {}, duration {}, key frame first: {} (expected {}, {}, true)",
                    t.decode_time,
                    t.duration,
                    t.starts_with_sync,
                    k * segment_ticks,
                    segment_ticks
                ));
            }
            segments.push(Bytes::from(bytes));
        }
        if dir.join(format!("seg{}.m4s", spec.segments)).exists() {
            return Err(format!("{} has more than {} segments", dir.display(), spec.segments));
        }
        Ok(Loop {
            init: Bytes::from(init),
            segments,
            tracks,
            timescale: video.timescale,
            segment_ticks,
            dir: dir.into(),
        })
    }
}

/// Where the loop is.
#[derive(Debug, Clone)]
pub(crate) enum Status {
    /// ffmpeg is making it (or it is being read).
    Generating,
    /// In memory.
    Ready(Arc<Loop>),
    /// It cannot be had: `error` a stable code, `message` what to do.
    Unavailable {
        /// `ffmpeg_missing` or `live_source_failed`.
        error: &'static str,
        /// A human-readable explanation.
        message: String,
    },
}

/// The ffmpeg arguments that make the loop in the current directory
/// (`init.mp4`, `seg{k}.m4s`, `loop.m3u8`).
pub(crate) fn ffmpeg_args(spec: &Spec, font: &str) -> Vec<String> {
    let Spec { width, height, fps, segment_secs, segments, kbps } = *spec;
    let duration = segment_secs * segments;
    let gop = fps * segment_secs;
    let text = |text: &str, size: u32, y: &str| {
        format!(
            "drawtext=fontfile={font}:text='{text}':fontsize={size}:fontcolor=white:box=1:boxcolor=black@0.6:\
             boxborderw=6:x=(w-tw)/2:y={y}"
        )
    };
    let filter = [
        text("Lockstep live test source", 20, "16"),
        text("loop %{pts\\:hms}", 40, "h/2-60"),
        text(&format!("frame %{{eif\\:n\\:d\\:4}} of {}", fps * duration), 30, "h/2+10"),
    ]
    .join(",");
    [
        "-hide_banner",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        &format!("testsrc2=size={width}x{height}:rate={fps}:duration={duration}"),
        "-vf",
        &filter,
        "-c:v",
        "libvpx-vp9",
        "-b:v",
        &format!("{kbps}k"),
        "-deadline",
        "realtime",
        "-cpu-used",
        "8",
        "-row-mt",
        "1",
        "-g",
        &gop.to_string(),
        "-keyint_min",
        &gop.to_string(),
        "-pix_fmt",
        "yuv420p",
        "-an",
        "-f",
        "hls",
        "-hls_time",
        &segment_secs.to_string(),
        "-hls_segment_type",
        "fmp4",
        "-hls_list_size",
        "0",
        "-hls_playlist_type",
        "vod",
        "-hls_fmp4_init_filename",
        "init.mp4",
        "-hls_segment_filename",
        "seg%d.m4s",
        "loop.m3u8",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The generations of this process, by ffmpeg and cache directory.
type Generations = HashMap<(PathBuf, PathBuf), watch::Receiver<Status>>;
static GENERATIONS: LazyLock<Mutex<Generations>> = LazyLock::new(Default::default);

/// The loop made by `ffmpeg` in `cache`: starts its generation on a thread,
/// or joins the one this process already runs (a failed one is tried again).
pub(crate) fn start(ffmpeg: &Path, cache: &Path) -> watch::Receiver<Status> {
    let mut running = GENERATIONS.lock().unwrap_or_else(|e| e.into_inner());
    let key = (ffmpeg.to_path_buf(), cache.to_path_buf());
    if let Some(rx) = running.get(&key).filter(|rx| !matches!(*rx.borrow(), Status::Unavailable { .. })) {
        return rx.clone();
    }
    let (tx, rx) = watch::channel(Status::Generating);
    running.insert(key, rx.clone());
    let (ffmpeg_path, cache_path) = (ffmpeg.to_path_buf(), cache.to_path_buf());
    let (ffmpeg, cache) = (ffmpeg_path.clone(), cache_path.clone());
    let spawned = std::thread::Builder::new().name("live-source".into()).spawn(move || {
        let status = match make(&ffmpeg, &cache, &SPEC) {
            Ok(l) => Status::Ready(Arc::new(l)),
            Err(status) => status,
        };
        tx.send_replace(status);
    });
    if let Err(e) = spawned {
        running.remove(&(ffmpeg_path, cache_path));
        let message = format!("cannot start the live source's thread: {e}");
        warn!("live source off: {message}");
        return watch::channel(Status::Unavailable { error: "live_source_failed", message }).1;
    }
    rx
}

/// Finds or makes the loop and reads it.
fn make(ffmpeg: &Path, cache: &Path, spec: &Spec) -> Result<Loop, Status> {
    let failed = |message: String| {
        warn!("live source off: {message}");
        Status::Unavailable { error: "live_source_failed", message }
    };
    let version = match Command::new(ffmpeg).arg("-version").stdin(Stdio::null()).stderr(Stdio::null()).output() {
        Ok(out) if out.status.success() => {
            String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_owned()
        }
        Ok(out) => return Err(failed(format!("{} -version failed ({})", ffmpeg.display(), out.status))),
        Err(e) => {
            let message = format!("ffmpeg not found ({}: {e}): {INSTALL_HINT}", ffmpeg.display());
            warn!("live source off: {message}");
            return Err(Status::Unavailable { error: "ffmpeg_missing", message });
        }
    };
    if !Path::new(FONT).exists() {
        let message = format!("the font {FONT} is missing: {INSTALL_HINT}");
        warn!("live source off: {message}");
        return Err(Status::Unavailable { error: "ffmpeg_missing", message });
    }
    let args = ffmpeg_args(spec, FONT);
    let dir = cache.join(format!("loop-{}", cache_key(&version, &args)));
    remove_stale_temporaries(cache);
    if dir.is_dir() {
        match Loop::load(&dir, spec) {
            Ok(l) => {
                info!(dir = %dir.display(), "live source: loop read from the cache");
                return Ok(l);
            }
            Err(e) => {
                warn!(error = %e, "live source: the cached loop is unusable; making it again");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    std::fs::create_dir_all(cache).map_err(|e| failed(format!("cannot create {}: {e}", cache.display())))?;
    let nanos = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let tmp = cache.join(format!(
        "{}.tmp-{}-{nanos}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("loop"),
        std::process::id()
    ));
    std::fs::create_dir_all(&tmp).map_err(|e| failed(format!("cannot create {}: {e}", tmp.display())))?;
    info!(dir = %dir.display(), "live source: making the loop with ffmpeg ({} s of {}x{} VP9)", spec.segments * spec.segment_secs, spec.width, spec.height);
    let started = Instant::now();
    let result = run_ffmpeg(ffmpeg, &args, &tmp);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(failed(e));
    }
    let _ = std::fs::remove_file(tmp.join("ffmpeg.log"));
    if let Err(e) = std::fs::rename(&tmp, &dir) {
        // Another process finished first: use its loop.
        let _ = std::fs::remove_dir_all(&tmp);
        if !dir.is_dir() {
            return Err(failed(format!("cannot move the loop into {}: {e}", dir.display())));
        }
    }
    let l = Loop::load(&dir, spec).map_err(|e| failed(format!("ffmpeg made an unusable loop: {e}")))?;
    info!(dir = %dir.display(), took_ms = started.elapsed().as_millis() as u64, "live source: loop made");
    Ok(l)
}

/// Runs ffmpeg in `dir`, its messages into `dir/ffmpeg.log`; kills it after
/// [`FFMPEG_TIMEOUT`].
fn run_ffmpeg(ffmpeg: &Path, args: &[String], dir: &Path) -> Result<(), String> {
    let log =
        std::fs::File::create(dir.join("ffmpeg.log")).map_err(|e| format!("cannot write in {}: {e}", dir.display()))?;
    let mut child = Command::new(ffmpeg)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot run {}: {e}", ffmpeg.display()))?;
    let deadline = Instant::now() + FFMPEG_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("ffmpeg took more than {} s", FFMPEG_TIMEOUT.as_secs()));
            }
            Err(e) => return Err(format!("waiting for ffmpeg: {e}")),
        }
    };
    if status.success() {
        return Ok(());
    }
    let text = std::fs::read_to_string(dir.join("ffmpeg.log")).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(5).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!("ffmpeg failed ({status}): {}", tail.join(" | ")))
}

/// The cache key: a hash of the ffmpeg version and the command.
fn cache_key(version: &str, args: &[String]) -> String {
    let mut input = version.as_bytes().to_vec();
    for a in args {
        input.push(0);
        input.extend_from_slice(a.as_bytes());
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, &input);
    digest.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Removes the temporary directories of generations that died (a process
/// stopped while its ffmpeg ran) more than an hour ago.
fn remove_stale_temporaries(cache: &Path) {
    let Ok(entries) = std::fs::read_dir(cache) else { return };
    for e in entries.flatten() {
        let old = e.metadata().and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
        if e.file_name().to_string_lossy().contains(".tmp-") && old.is_some_and(|age| age > Duration::from_secs(3600)) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}
