//! Retiming a media segment: new sequence numbers and decode times.
//!
//! A version 0 time that no longer fits 32 bits is rewritten as version 1:
//! the boxes around it grow, and every offset that spans the growth is
//! corrected (`trun` data offsets, an explicit `tfhd` base data offset, a
//! `sidx`'s first offset and referenced sizes), so the samples are found
//! where they were. Container sizes (`moof`, `traf`) are recomputed.

use std::borrow::Cow;

use super::*;

/// How far to move a segment in time: `ticks` of `timescale` (converted,
/// exactly, to each box's own timescale).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shift {
    /// The shift, in ticks of `timescale`.
    pub ticks: u64,
    /// Ticks per second.
    pub timescale: u32,
}

impl Shift {
    pub(super) fn to(self, target: u32) -> Result<u64> {
        let n = u128::from(self.ticks) * u128::from(target);
        let d = u128::from(self.timescale.max(1));
        if n % d != 0 {
            return Err(Mp4Error::InexactShift { ticks: self.ticks, timescale: self.timescale, target });
        }
        u64::try_from(n / d).map_err(|_| Mp4Error::Overflow("the shift"))
    }
}

/// A box of the rewritten segment: the original bytes, new bytes, or a
/// container whose size is recomputed from its children.
enum Node<'a> {
    Bytes(Cow<'a, [u8]>),
    Container { kind: [u8; 4], children: Vec<Node<'a>> },
}

impl Node<'_> {
    fn len(&self) -> usize {
        match self {
            Node::Bytes(b) => b.len(),
            Node::Container { children, .. } => 8 + children.iter().map(Node::len).sum::<usize>(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) -> Result<()> {
        match self {
            Node::Bytes(b) => out.extend_from_slice(b),
            Node::Container { kind, children } => {
                let len = u32::try_from(self.len()).map_err(|_| Mp4Error::Overflow("a container's size"))?;
                out.extend_from_slice(&len.to_be_bytes());
                out.extend_from_slice(kind);
                for c in children {
                    c.write(out)?;
                }
            }
        }
        Ok(())
    }
}

/// A full box with a fresh 32-bit header.
pub(super) fn full_box(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(12 + payload.len());
    b.extend_from_slice(&((12 + payload.len()) as u32).to_be_bytes());
    b.extend_from_slice(kind);
    b.extend_from_slice(&(u32::from(version) << 24 | flags).to_be_bytes());
    b.extend_from_slice(payload);
    b
}

/// Bytes inserted at a position of the original segment.
#[derive(Debug, Clone, Copy)]
struct Growth {
    at: usize,
    by: usize,
}

/// How much grows within `[from, to)` of the original segment.
fn grown(growth: &[Growth], from: usize, to: usize) -> usize {
    growth.iter().filter(|g| g.at >= from && g.at < to).map(|g| g.by).sum()
}

/// An offset field to correct once every growth is known.
enum Fix {
    /// `trun` data offset at `field` (of the original segment), relative to
    /// `base` (the `moof` start, or an absolute base data offset).
    DataOffset { field: usize, base: usize, value: i32 },
    /// `tfhd` base data offset at `field`: an absolute position.
    BaseDataOffset { field: usize, value: u64 },
}

/// The segment with every `mfhd` sequence number set (`sequence`, then
/// `sequence + 1`… for further fragments) and every `tfdt` (and `sidx`
/// earliest presentation time) moved by `shift`. See the module docs.
pub(crate) fn retime(segment: &[u8], tracks: &[Track], sequence: u32, shift: Shift) -> Result<Vec<u8>> {
    let top = boxes(segment, 0, segment.len())?;
    let mut edit = Edit::default();
    let mut moofs = 0u32;
    for h in &top {
        match &h.kind {
            b"moof" => {
                retime_moof(segment, h, tracks, sequence.wrapping_add(moofs), shift, &mut edit)?;
                moofs += 1;
            }
            b"sidx" => retime_sidx(segment, h, shift, &mut edit)?,
            _ => {}
        }
    }
    if moofs == 0 {
        return Err(Mp4Error::Missing("moof"));
    }
    edit.finish(segment, &top)
}

/// The changes to a segment: boxes replaced (by their original start),
/// bytes inserted (growth), offsets to correct for the growth.
#[derive(Default)]
struct Edit {
    replaced: Vec<(usize, Vec<u8>)>,
    growth: Vec<Growth>,
    fixes: Vec<Fix>,
}

impl Edit {
    fn replace(&mut self, h: &Header, new: Vec<u8>) {
        if new.len() > h.len {
            self.growth.push(Growth { at: h.start, by: new.len() - h.len });
        }
        self.replaced.push((h.start, new));
    }

    /// The new segment: offsets corrected, containers resized.
    fn finish(mut self, segment: &[u8], top: &[Header]) -> Result<Vec<u8>> {
        // A sidx's offsets and sizes span the boxes after it.
        for (start, b) in self.replaced.iter_mut().filter(|(_, b)| &b[4..8] == b"sidx") {
            let anchor = top.iter().find(|h| h.start == *start).map_or(0, Header::end);
            fix_sidx(b, anchor, &self.growth)?;
        }
        let mut patches: Vec<(usize, [u8; 8], usize)> = Vec::new();
        for fix in &self.fixes {
            match *fix {
                Fix::DataOffset { field, base, value } => {
                    let target = base as i64 + i64::from(value);
                    let t = usize::try_from(target).map_err(|_| Mp4Error::Overflow("trun data offset"))?;
                    let new = if t >= base {
                        i64::from(value) + grown(&self.growth, base, t) as i64
                    } else {
                        i64::from(value) - grown(&self.growth, t, base) as i64
                    };
                    let new = i32::try_from(new).map_err(|_| Mp4Error::Overflow("trun data offset"))?;
                    let mut b = [0; 8];
                    b[..4].copy_from_slice(&new.to_be_bytes());
                    patches.push((field, b, 4));
                }
                Fix::BaseDataOffset { field, value } => {
                    let upto = usize::try_from(value).unwrap_or(usize::MAX);
                    let new = value
                        .checked_add(grown(&self.growth, 0, upto) as u64)
                        .ok_or(Mp4Error::Overflow("base data offset"))?;
                    patches.push((field, new.to_be_bytes(), 8));
                }
            }
        }
        let node = |h: &Header| -> Node<'_> {
            if let Some((_, b)) = self.replaced.iter().find(|(s, _)| *s == h.start) {
                return Node::Bytes(Cow::Owned(b.clone()));
            }
            let original = &segment[h.start..h.end()];
            let mut inside = patches.iter().filter(|(at, ..)| (h.start..h.end()).contains(at)).peekable();
            if inside.peek().is_none() {
                return Node::Bytes(Cow::Borrowed(original));
            }
            let mut b = original.to_vec();
            for (at, bytes, n) in inside {
                b[at - h.start..at - h.start + n].copy_from_slice(&bytes[..*n]);
            }
            Node::Bytes(Cow::Owned(b))
        };
        let mut out = Vec::with_capacity(segment.len() + self.growth.iter().map(|g| g.by).sum::<usize>());
        for h in top {
            if &h.kind != b"moof" {
                node(h).write(&mut out)?;
                continue;
            }
            let mut in_moof = Vec::new();
            for c in children(segment, h)? {
                let n = if &c.kind == b"traf" {
                    Node::Container { kind: c.kind, children: children(segment, &c)?.iter().map(node).collect() }
                } else {
                    node(&c)
                };
                in_moof.push(n);
            }
            Node::Container { kind: h.kind, children: in_moof }.write(&mut out)?;
        }
        Ok(out)
    }
}

fn retime_moof(
    segment: &[u8],
    moof: &Header,
    tracks: &[Track],
    sequence: u32,
    shift: Shift,
    edit: &mut Edit,
) -> Result<()> {
    let in_moof = children(segment, moof)?;
    let mfhd = find(&in_moof, b"mfhd").ok_or(Mp4Error::Missing("mfhd"))?;
    if mfhd.len < mfhd.header + 8 {
        return Err(Mp4Error::Truncated("mfhd".into()));
    }
    let mut m = segment[mfhd.start..mfhd.end()].to_vec();
    m[mfhd.header + 4..mfhd.header + 8].copy_from_slice(&sequence.to_be_bytes());
    edit.replace(&mfhd, m);
    for (i, traf) in in_moof.iter().filter(|c| &c.kind == b"traf").enumerate() {
        let in_traf = children(segment, traf)?;
        let tfhd_h = find(&in_traf, b"tfhd").ok_or(Mp4Error::Missing("tfhd"))?;
        let tfhd = parse_tfhd(tfhd_h.body(segment))?;
        let t = track(tracks, tfhd.track_id)?;
        let tfdt = find(&in_traf, b"tfdt").ok_or(Mp4Error::Missing("tfdt"))?;
        let (version, old) = parse_tfdt(tfdt.body(segment))?;
        let new = old.checked_add(shift.to(t.timescale)?).ok_or(Mp4Error::Overflow("tfdt"))?;
        let fl = flags(tfdt.body(segment));
        let b = match u32::try_from(new) {
            Ok(small) if version == 0 => full_box(b"tfdt", 0, fl, &small.to_be_bytes()),
            _ => full_box(b"tfdt", 1, fl, &new.to_be_bytes()),
        };
        edit.replace(&tfdt, b);
        let base = match tfhd.base_data_offset {
            Some(value) => {
                edit.fixes.push(Fix::BaseDataOffset { field: tfhd_h.start + tfhd_h.header + 8, value });
                usize::try_from(value).map_err(|_| Mp4Error::Overflow("base data offset"))?
            }
            None if i == 0 || tfhd.flags & DEFAULT_BASE_IS_MOOF != 0 => moof.start,
            // Relative to the end of the previous track fragment's data: not written by fragmenters we know.
            None => {
                return Err(Mp4Error::Unsupported("a second traf without a base data offset or default-base-is-moof"));
            }
        };
        for trun in in_traf.iter().filter(|c| &c.kind == b"trun") {
            let b = trun.body(segment);
            if flags(b) & DATA_OFFSET != 0 {
                let value = be_u32(b, 8).ok_or_else(|| Mp4Error::Truncated("trun".into()))? as i32;
                edit.fixes.push(Fix::DataOffset { field: trun.start + trun.header + 8, base, value });
            }
        }
    }
    Ok(())
}

fn retime_sidx(segment: &[u8], h: &Header, shift: Shift, edit: &mut Edit) -> Result<()> {
    let b = h.body(segment);
    let bad = || Mp4Error::Truncated("sidx".into());
    let (version, fl) = (b.first().copied().ok_or_else(bad)?, flags(b));
    let timescale = be_u32(b, 8).ok_or_else(bad)?;
    let (ept, first_offset, rest) = if version == 0 {
        (u64::from(be_u32(b, 12).ok_or_else(bad)?), u64::from(be_u32(b, 16).ok_or_else(bad)?), 20)
    } else {
        (be_u64(b, 12).ok_or_else(bad)?, be_u64(b, 20).ok_or_else(bad)?, 28)
    };
    let ept = ept.checked_add(shift.to(timescale)?).ok_or(Mp4Error::Overflow("sidx"))?;
    let v1 = version != 0 || ept > u64::from(u32::MAX);
    let mut payload = b[4..12].to_vec();
    if v1 {
        payload.extend_from_slice(&ept.to_be_bytes());
        payload.extend_from_slice(&first_offset.to_be_bytes());
    } else {
        payload.extend_from_slice(&(ept as u32).to_be_bytes());
        payload.extend_from_slice(&(first_offset as u32).to_be_bytes());
    }
    payload.extend_from_slice(b.get(rest..).ok_or_else(bad)?);
    edit.replace(h, full_box(b"sidx", u8::from(v1), fl, &payload));
    Ok(())
}

/// Corrects a (rebuilt) `sidx` box for the growth of the boxes it indexes:
/// its first offset (from `anchor`, the original end of the sidx) and each
/// reference's size.
fn fix_sidx(b: &mut [u8], anchor: usize, growth: &[Growth]) -> Result<()> {
    let bad = || Mp4Error::Truncated("sidx".into());
    let v1 = b[8] == 1;
    // Positions in the box: 8 header, 4 version and flags, 4 reference id,
    // 4 timescale, the earliest presentation time and first offset (4 or 8
    // each), 2 reserved, 2 reference count, then 12 bytes per reference.
    let (first_at, count_at) = if v1 { (28, 38) } else { (24, 30) };
    let first_offset = if v1 { be_u64(b, first_at) } else { be_u32(b, first_at).map(u64::from) }.ok_or_else(bad)?;
    let start = anchor.saturating_add(usize::try_from(first_offset).unwrap_or(usize::MAX));
    let new_first = first_offset.checked_add(grown(growth, anchor, start) as u64).ok_or(Mp4Error::Overflow("sidx"))?;
    if v1 {
        b[first_at..first_at + 8].copy_from_slice(&new_first.to_be_bytes());
    } else {
        let v = u32::try_from(new_first).map_err(|_| Mp4Error::Overflow("sidx first offset"))?;
        b[first_at..first_at + 4].copy_from_slice(&v.to_be_bytes());
    }
    let count = b.get(count_at..count_at + 2).map(|s| u16::from_be_bytes([s[0], s[1]])).ok_or_else(bad)?;
    let mut pos = start;
    for i in 0..usize::from(count) {
        let at = count_at + 2 + i * 12;
        let word = be_u32(b, at).ok_or_else(bad)?;
        let (kind, size) = (word & 0x8000_0000, word & 0x7fff_ffff);
        let new = size as usize + grown(growth, pos, pos.saturating_add(size as usize));
        let new =
            u32::try_from(new).ok().filter(|&n| n <= 0x7fff_ffff).ok_or(Mp4Error::Overflow("sidx referenced size"))?;
        b[at..at + 4].copy_from_slice(&(kind | new).to_be_bytes());
        pos = pos.saturating_add(size as usize);
    }
    Ok(())
}
