//! Just enough ISO BMFF (fragmented MP4) to serve a loop as an endless live
//! stream: read an init segment's tracks, inspect a media segment's fragments
//! (sequence number, decode time, duration, first sample a key frame), and
//! **retime** a media segment ([`retime`]): a new `mfhd` sequence number and
//! every `tfdt` baseMediaDecodeTime (and a `sidx` earliest presentation time)
//! moved by a shift, so that media time runs on across the loop's
//! repetitions.
//!
//! Boxes are parsed properly: 32-bit and 64-bit sizes, `size 0` to the end,
//! versions 0 and 1 of `tkhd`, `mdhd`, `tfdt` and `sidx`; every read is
//! bounds-checked, so bad bytes give an [`Mp4Error`], never a panic.

/// What is wrong with a segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Mp4Error {
    /// A box runs past the end of its parent (or the file).
    #[error("truncated {0} box")]
    Truncated(String),
    /// A box's size is smaller than its header.
    #[error("invalid size of a {0} box")]
    BadSize(String),
    /// A box the segment needs is missing.
    #[error("no {0} box")]
    Missing(&'static str),
    /// A `tfhd` names a track the init segment does not have.
    #[error("track {0} is not in the init segment")]
    UnknownTrack(u32),
    /// A shift that is not a whole number of ticks in a box's timescale.
    #[error("a shift of {ticks}/{timescale} s is not a whole number of 1/{target} s")]
    InexactShift {
        /// The shift, in ticks of `timescale`.
        ticks: u64,
        /// Its timescale.
        timescale: u32,
        /// The box's timescale.
        target: u32,
    },
    /// A layout this module does not rewrite.
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// A time or size beyond what the box can hold.
    #[error("{0} overflows")]
    Overflow(&'static str),
}

type Result<T> = std::result::Result<T, Mp4Error>;

mod retime;

pub(crate) use retime::{Shift, retime};

fn name(kind: [u8; 4]) -> String {
    kind.iter().map(|&b| if b.is_ascii_graphic() { b as char } else { '?' }).collect()
}

fn be_u32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_be_bytes(s.try_into().expect("4 bytes")))
}

fn be_u64(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8).map(|s| u64::from_be_bytes(s.try_into().expect("8 bytes")))
}

/// One box of a buffer: its type, where it starts, its header length and its
/// total length.
#[derive(Debug, Clone, Copy)]
struct Header {
    kind: [u8; 4],
    start: usize,
    header: usize,
    len: usize,
}

impl Header {
    fn body<'a>(&self, buf: &'a [u8]) -> &'a [u8] {
        &buf[self.start + self.header..self.start + self.len]
    }

    fn end(&self) -> usize {
        self.start + self.len
    }
}

/// The boxes of `buf[start..end]`, in order.
fn boxes(buf: &[u8], start: usize, end: usize) -> Result<Vec<Header>> {
    let mut out = Vec::new();
    let mut at = start;
    while at < end {
        if end - at < 8 {
            return Err(Mp4Error::Truncated("box header".into()));
        }
        let size = be_u32(buf, at).expect("8 bytes are there");
        let kind: [u8; 4] = buf[at + 4..at + 8].try_into().expect("4 bytes");
        let (header, len) = match size {
            0 => (8, end - at),
            1 => {
                let large =
                    be_u64(buf, at + 8).filter(|_| end - at >= 16).ok_or_else(|| Mp4Error::Truncated(name(kind)))?;
                (16, usize::try_from(large).map_err(|_| Mp4Error::Truncated(name(kind)))?)
            }
            n => (8, n as usize),
        };
        let header = if &kind == b"uuid" { header + 16 } else { header };
        if len < header {
            return Err(Mp4Error::BadSize(name(kind)));
        }
        if len > end - at {
            return Err(Mp4Error::Truncated(name(kind)));
        }
        out.push(Header { kind, start: at, header, len });
        at += len;
    }
    Ok(out)
}

fn find(list: &[Header], kind: &[u8; 4]) -> Option<Header> {
    list.iter().find(|h| &h.kind == kind).copied()
}

fn children(buf: &[u8], h: &Header) -> Result<Vec<Header>> {
    boxes(buf, h.start + h.header, h.end())
}

/// A track of an init segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Track {
    /// `tkhd` track id.
    pub id: u32,
    /// `mdhd` timescale (ticks per second).
    pub timescale: u32,
    /// `trex` default sample duration.
    pub default_duration: u32,
    /// `trex` default sample flags.
    pub default_flags: u32,
}

/// The tracks of an init segment (`moov`).
pub(crate) fn init_tracks(init: &[u8]) -> Result<Vec<Track>> {
    let top = boxes(init, 0, init.len())?;
    let moov = find(&top, b"moov").ok_or(Mp4Error::Missing("moov"))?;
    let in_moov = children(init, &moov)?;
    let trex: Vec<(u32, u32, u32)> = match find(&in_moov, b"mvex") {
        Some(mvex) => children(init, &mvex)?
            .iter()
            .filter(|h| &h.kind == b"trex")
            .map(|h| {
                let b = h.body(init);
                match (be_u32(b, 4), be_u32(b, 12), be_u32(b, 20)) {
                    (Some(id), Some(duration), Some(flags)) => Ok((id, duration, flags)),
                    _ => Err(Mp4Error::Truncated("trex".into())),
                }
            })
            .collect::<Result<_>>()?,
        None => Vec::new(),
    };
    let mut tracks = Vec::new();
    for trak in in_moov.iter().filter(|h| &h.kind == b"trak") {
        let in_trak = children(init, trak)?;
        let tkhd = find(&in_trak, b"tkhd").ok_or(Mp4Error::Missing("tkhd"))?;
        let b = tkhd.body(init);
        let id = match b.first() {
            Some(1) => be_u32(b, 20),
            _ => be_u32(b, 12),
        }
        .ok_or_else(|| Mp4Error::Truncated("tkhd".into()))?;
        let mdia = find(&in_trak, b"mdia").ok_or(Mp4Error::Missing("mdia"))?;
        let mdhd = find(&children(init, &mdia)?, b"mdhd").ok_or(Mp4Error::Missing("mdhd"))?;
        let b = mdhd.body(init);
        let timescale = match b.first() {
            Some(1) => be_u32(b, 20),
            _ => be_u32(b, 12),
        }
        .filter(|&t| t > 0)
        .ok_or_else(|| Mp4Error::Truncated("mdhd".into()))?;
        let (default_duration, default_flags) = trex.iter().find(|t| t.0 == id).map_or((0, 0), |&(_, d, f)| (d, f));
        tracks.push(Track { id, timescale, default_duration, default_flags });
    }
    if tracks.is_empty() {
        return Err(Mp4Error::Missing("trak"));
    }
    Ok(tracks)
}

fn track(tracks: &[Track], id: u32) -> Result<&Track> {
    tracks.iter().find(|t| t.id == id).ok_or(Mp4Error::UnknownTrack(id))
}

// tfhd flags
const BASE_DATA_OFFSET: u32 = 0x1;
const SAMPLE_DESCRIPTION_INDEX: u32 = 0x2;
const DEFAULT_DURATION: u32 = 0x8;
const DEFAULT_SIZE: u32 = 0x10;
const DEFAULT_FLAGS: u32 = 0x20;
const DEFAULT_BASE_IS_MOOF: u32 = 0x2_0000;
// trun flags
const DATA_OFFSET: u32 = 0x1;
const FIRST_SAMPLE_FLAGS: u32 = 0x4;
const SAMPLE_DURATION: u32 = 0x100;
const SAMPLE_SIZE: u32 = 0x200;
const SAMPLE_FLAGS: u32 = 0x400;
const SAMPLE_CTS: u32 = 0x800;
/// `sample_is_non_sync_sample` in sample flags.
const NON_SYNC: u32 = 0x1_0000;

fn flags(body: &[u8]) -> u32 {
    be_u32(body, 0).unwrap_or(0) & 0x00ff_ffff
}

/// A parsed `tfhd`.
#[derive(Debug, Clone, Copy)]
struct Tfhd {
    flags: u32,
    track_id: u32,
    base_data_offset: Option<u64>,
    default_duration: Option<u32>,
    default_flags: Option<u32>,
}

fn parse_tfhd(b: &[u8]) -> Result<Tfhd> {
    let bad = || Mp4Error::Truncated("tfhd".into());
    let f = flags(b);
    let track_id = be_u32(b, 4).ok_or_else(bad)?;
    let mut at = 8;
    let base_data_offset = if f & BASE_DATA_OFFSET != 0 {
        at += 8;
        Some(be_u64(b, at - 8).ok_or_else(bad)?)
    } else {
        None
    };
    if f & SAMPLE_DESCRIPTION_INDEX != 0 {
        at += 4;
    }
    let mut field = |present: u32| -> Result<Option<u32>> {
        if f & present == 0 {
            return Ok(None);
        }
        at += 4;
        be_u32(b, at - 4).map(Some).ok_or_else(bad)
    };
    let default_duration = field(DEFAULT_DURATION)?;
    let _default_size = field(DEFAULT_SIZE)?;
    let default_flags = field(DEFAULT_FLAGS)?;
    Ok(Tfhd { flags: f, track_id, base_data_offset, default_duration, default_flags })
}

/// A `tfdt`: version and baseMediaDecodeTime.
fn parse_tfdt(b: &[u8]) -> Result<(u8, u64)> {
    let bad = || Mp4Error::Truncated("tfdt".into());
    match b.first() {
        Some(1) => Ok((1, be_u64(b, 4).ok_or_else(bad)?)),
        Some(_) => Ok((0, u64::from(be_u32(b, 4).ok_or_else(bad)?))),
        None => Err(bad()),
    }
}

/// One track fragment of a media segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TrackFragment {
    /// The track.
    pub track_id: u32,
    /// `tfdt` baseMediaDecodeTime, in the track's timescale.
    pub decode_time: u64,
    /// The sum of the sample durations, in the track's timescale.
    pub duration: u64,
    /// How many samples.
    pub samples: u32,
    /// Whether the first sample is a sync sample (a key frame).
    pub starts_with_sync: bool,
}

/// One movie fragment (`moof`) of a media segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fragment {
    /// `mfhd` sequence number.
    pub sequence: u32,
    /// Its track fragments.
    pub tracks: Vec<TrackFragment>,
}

/// What a `trun` says about its samples.
struct Run {
    samples: u32,
    duration: u64,
    /// The first sample's flags (none without samples).
    first_flags: Option<u32>,
}

fn parse_trun(b: &[u8], default_duration: u32, default_flags: u32) -> Result<Run> {
    let bad = || Mp4Error::Truncated("trun".into());
    let f = flags(b);
    let samples = be_u32(b, 4).ok_or_else(bad)?;
    let mut at = 8 + if f & DATA_OFFSET != 0 { 4 } else { 0 };
    let first_sample_flags = if f & FIRST_SAMPLE_FLAGS != 0 {
        at += 4;
        Some(be_u32(b, at - 4).ok_or_else(bad)?)
    } else {
        None
    };
    let fields = [SAMPLE_DURATION, SAMPLE_SIZE, SAMPLE_FLAGS, SAMPLE_CTS];
    let per_sample = fields.iter().filter(|&&x| f & x != 0).count() * 4;
    let table = (samples as usize).checked_mul(per_sample).ok_or_else(bad)?;
    if b.len() < at + table {
        return Err(bad());
    }
    let duration = if f & SAMPLE_DURATION != 0 {
        (0..samples as usize).map(|i| u64::from(be_u32(b, at + i * per_sample).expect("checked above"))).sum()
    } else {
        u64::from(samples) * u64::from(default_duration)
    };
    let own_flags = (f & SAMPLE_FLAGS != 0 && samples > 0).then(|| {
        let skip = [SAMPLE_DURATION, SAMPLE_SIZE].iter().filter(|&&x| f & x != 0).count() * 4;
        be_u32(b, at + skip).expect("checked above")
    });
    let first_flags = (samples > 0).then(|| first_sample_flags.or(own_flags).unwrap_or(default_flags));
    Ok(Run { samples, duration, first_flags })
}

/// The movie fragments of a media segment.
pub(crate) fn fragments(segment: &[u8], tracks: &[Track]) -> Result<Vec<Fragment>> {
    let mut out = Vec::new();
    for moof in boxes(segment, 0, segment.len())?.iter().filter(|h| &h.kind == b"moof") {
        let in_moof = children(segment, moof)?;
        let mfhd = find(&in_moof, b"mfhd").ok_or(Mp4Error::Missing("mfhd"))?;
        let sequence = be_u32(mfhd.body(segment), 4).ok_or_else(|| Mp4Error::Truncated("mfhd".into()))?;
        let mut trafs = Vec::new();
        for traf in in_moof.iter().filter(|h| &h.kind == b"traf") {
            let in_traf = children(segment, traf)?;
            let tfhd = parse_tfhd(find(&in_traf, b"tfhd").ok_or(Mp4Error::Missing("tfhd"))?.body(segment))?;
            let t = track(tracks, tfhd.track_id)?;
            let (_, decode_time) = parse_tfdt(find(&in_traf, b"tfdt").ok_or(Mp4Error::Missing("tfdt"))?.body(segment))?;
            let default_duration = tfhd.default_duration.unwrap_or(t.default_duration);
            let default_flags = tfhd.default_flags.unwrap_or(t.default_flags);
            let (mut duration, mut samples, mut first_flags) = (0u64, 0u32, None);
            for trun in in_traf.iter().filter(|h| &h.kind == b"trun") {
                let run = parse_trun(trun.body(segment), default_duration, default_flags)?;
                duration += run.duration;
                if samples == 0 {
                    first_flags = run.first_flags;
                }
                samples = samples.saturating_add(run.samples);
            }
            trafs.push(TrackFragment {
                track_id: tfhd.track_id,
                decode_time,
                duration,
                samples,
                starts_with_sync: first_flags.is_some_and(|f| f & NON_SYNC == 0),
            });
        }
        out.push(Fragment { sequence, tracks: trafs });
    }
    if out.is_empty() {
        return Err(Mp4Error::Missing("moof"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
