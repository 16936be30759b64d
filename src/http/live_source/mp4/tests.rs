//! Retiming on hand-built boxes: versions 0 and 1, growth and the offsets it
//! moves, several fragments, and bad input. (The real generated loop is
//! tested in `live_source/tests.rs`.)

use super::retime::full_box;
use super::*;

fn bx(kind: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut b = ((8 + payload.len()) as u32).to_be_bytes().to_vec();
    b.extend_from_slice(kind);
    b.extend_from_slice(payload);
    b
}

fn full(kind: &[u8; 4], version: u8, flags: u32, payload: &[u8]) -> Vec<u8> {
    full_box(kind, version, flags, payload)
}

const TRACK: u32 = 1;
const TIMESCALE: u32 = 15_360;
const SAMPLE_DURATION_TICKS: u32 = 512;
const SAMPLES: [&[u8]; 3] = [b"key-frame-bytes", b"delta-1", b"delta-two"];

/// An init segment with one track (`tkhd` v0, `mdhd` v0, a `trex`).
fn init() -> Vec<u8> {
    let mut tkhd = vec![0; 8];
    tkhd.extend_from_slice(&TRACK.to_be_bytes());
    tkhd.extend_from_slice(&[0; 68]);
    let mut mdhd = vec![0; 8];
    mdhd.extend_from_slice(&TIMESCALE.to_be_bytes());
    mdhd.extend_from_slice(&[0; 8]);
    let mdia = bx(b"mdia", &full(b"mdhd", 0, 0, &mdhd));
    let trak = bx(b"trak", &[full(b"tkhd", 0, 3, &tkhd), mdia].concat());
    let mut trex = TRACK.to_be_bytes().to_vec();
    for v in [1u32, SAMPLE_DURATION_TICKS, 0, 0x0101_0000] {
        trex.extend_from_slice(&v.to_be_bytes());
    }
    let mvex = bx(b"mvex", &full(b"trex", 0, 0, &trex));
    [bx(b"ftyp", b"iso6\0\0\0\0"), bx(b"moov", &[trak, mvex].concat())].concat()
}

/// How a hand-built segment is laid out.
#[derive(Clone, Copy)]
struct Layout {
    tfdt_version: u8,
    decode_time: u64,
    /// A `sidx` of this version first.
    sidx: Option<u8>,
    /// An explicit (absolute) base data offset instead of default-base-is-moof.
    explicit_base: bool,
}

/// A media segment: styp, [sidx], moof (mfhd, traf (tfhd, tfdt, trun with
/// per-sample sizes and a data offset)), mdat with [`SAMPLES`].
fn segment(l: Layout) -> Vec<u8> {
    let styp = bx(b"styp", b"msdh\0\0\0\0");
    let tfdt = match l.tfdt_version {
        0 => full(b"tfdt", 0, 0, &(l.decode_time as u32).to_be_bytes()),
        _ => full(b"tfdt", 1, 0, &l.decode_time.to_be_bytes()),
    };
    let mfhd = full(b"mfhd", 0, 0, &7u32.to_be_bytes());
    let build = |data_offset: i32, base: u64| {
        let mut tfhd = TRACK.to_be_bytes().to_vec();
        let tfhd_flags = if l.explicit_base {
            tfhd.extend_from_slice(&base.to_be_bytes());
            BASE_DATA_OFFSET | DEFAULT_DURATION
        } else {
            DEFAULT_BASE_IS_MOOF | DEFAULT_DURATION
        };
        tfhd.extend_from_slice(&SAMPLE_DURATION_TICKS.to_be_bytes());
        let mut trun = (SAMPLES.len() as u32).to_be_bytes().to_vec();
        trun.extend_from_slice(&data_offset.to_be_bytes());
        trun.extend_from_slice(&0x0200_0000u32.to_be_bytes()); // first sample: a key frame
        for s in SAMPLES {
            trun.extend_from_slice(&(s.len() as u32).to_be_bytes());
        }
        let trun = full(b"trun", 0, DATA_OFFSET | FIRST_SAMPLE_FLAGS | SAMPLE_SIZE, &trun);
        let traf = bx(b"traf", &[full(b"tfhd", 0, tfhd_flags, &tfhd), tfdt.clone(), trun].concat());
        bx(b"moof", &[mfhd.clone(), traf].concat())
    };
    let mdat = bx(b"mdat", &SAMPLES.concat());
    let moof_len = build(0, 0).len();
    let sidx = l.sidx.map(|v| {
        let mut p = TRACK.to_be_bytes().to_vec();
        p.extend_from_slice(&TIMESCALE.to_be_bytes());
        if v == 0 {
            p.extend_from_slice(&(l.decode_time as u32).to_be_bytes());
            p.extend_from_slice(&0u32.to_be_bytes());
        } else {
            p.extend_from_slice(&l.decode_time.to_be_bytes());
            p.extend_from_slice(&0u64.to_be_bytes());
        }
        p.extend_from_slice(&[0, 0, 0, 1]); // reserved, one reference
        p.extend_from_slice(&((moof_len + mdat.len()) as u32).to_be_bytes());
        p.extend_from_slice(&(3 * SAMPLE_DURATION_TICKS).to_be_bytes());
        p.extend_from_slice(&0x9000_0000u32.to_be_bytes()); // starts with SAP type 1
        full(b"sidx", v, 0, &p)
    });
    let sidx = sidx.unwrap_or_default();
    let moof_start = styp.len() + sidx.len();
    let data_offset = (moof_len + 8) as i32;
    let base = if l.explicit_base { moof_start as u64 } else { 0 };
    [styp, sidx, build(data_offset, base), mdat].concat()
}

/// The samples a segment's (first) trun points at, read as a demuxer would.
fn samples_of(seg: &[u8]) -> Vec<u8> {
    let top = boxes(seg, 0, seg.len()).unwrap();
    let moof = find(&top, b"moof").unwrap();
    let traf = find(&children(seg, &moof).unwrap(), b"traf").unwrap();
    let in_traf = children(seg, &traf).unwrap();
    let tfhd = parse_tfhd(find(&in_traf, b"tfhd").unwrap().body(seg)).unwrap();
    let trun = find(&in_traf, b"trun").unwrap();
    let b = trun.body(seg);
    let data_offset = be_u32(b, 8).unwrap() as i32;
    let count = be_u32(b, 4).unwrap() as usize;
    let total: usize = (0..count).map(|i| be_u32(b, 16 + 4 * i).unwrap() as usize).sum();
    let base = tfhd.base_data_offset.map_or(moof.start, |b| b as usize);
    let at = (base as i64 + i64::from(data_offset)) as usize;
    seg[at..at + total].to_vec()
}

/// The sidx's earliest presentation time, first offset and first referenced size.
fn sidx_of(seg: &[u8]) -> (u8, u64, u64, u32) {
    let top = boxes(seg, 0, seg.len()).unwrap();
    let s = find(&top, b"sidx").unwrap();
    let b = s.body(seg);
    let (ept, first, refs) = if b[0] == 0 {
        (u64::from(be_u32(b, 12).unwrap()), u64::from(be_u32(b, 16).unwrap()), 24)
    } else {
        (be_u64(b, 12).unwrap(), be_u64(b, 20).unwrap(), 32)
    };
    (b[0], ept, first, be_u32(b, refs).unwrap() & 0x7fff_ffff)
}

fn tfdt_version(seg: &[u8]) -> u8 {
    let top = boxes(seg, 0, seg.len()).unwrap();
    let moof = find(&top, b"moof").unwrap();
    let traf = find(&children(seg, &moof).unwrap(), b"traf").unwrap();
    find(&children(seg, &traf).unwrap(), b"tfdt").unwrap().body(seg)[0]
}

fn shift_secs(secs: u64) -> Shift {
    Shift { ticks: secs * u64::from(TIMESCALE), timescale: TIMESCALE }
}

#[test]
fn the_init_segment_names_the_track_and_its_timescale() {
    let tracks = init_tracks(&init()).unwrap();
    assert_eq!(
        tracks,
        [Track {
            id: TRACK,
            timescale: TIMESCALE,
            default_duration: SAMPLE_DURATION_TICKS,
            default_flags: 0x0101_0000
        }]
    );
}

#[test]
fn fragments_report_sequence_decode_time_duration_and_key_frame() {
    let tracks = init_tracks(&init()).unwrap();
    let seg = segment(Layout { tfdt_version: 1, decode_time: 30_720, sidx: Some(1), explicit_base: false });
    let f = fragments(&seg, &tracks).unwrap();
    assert_eq!(
        f,
        [Fragment {
            sequence: 7,
            tracks: vec![TrackFragment {
                track_id: TRACK,
                decode_time: 30_720,
                duration: 3 * u64::from(SAMPLE_DURATION_TICKS),
                samples: 3,
                starts_with_sync: true,
            }],
        }]
    );
    assert_eq!(samples_of(&seg), SAMPLES.concat(), "the builder's offsets are right");
}

#[test]
fn version_1_times_are_shifted_in_place() {
    let tracks = init_tracks(&init()).unwrap();
    let seg = segment(Layout { tfdt_version: 1, decode_time: 15_360, sidx: Some(1), explicit_base: false });
    let out = retime(&seg, &tracks, 42, shift_secs(20)).unwrap();
    assert_eq!(out.len(), seg.len());
    let f = fragments(&out, &tracks).unwrap();
    assert_eq!((f[0].sequence, f[0].tracks[0].decode_time), (42, 15_360 + 20 * 15_360));
    assert_eq!(sidx_of(&out), (1, 15_360 + 20 * 15_360, 0, sidx_of(&seg).3));
    assert_eq!(samples_of(&out), SAMPLES.concat());
    // Only the times and the sequence number changed.
    let changed = seg.iter().zip(&out).filter(|(a, b)| a != b).count();
    assert!(changed <= 6, "{changed} bytes changed");
}

#[test]
fn version_0_times_stay_version_0_while_they_fit() {
    let tracks = init_tracks(&init()).unwrap();
    let seg = segment(Layout { tfdt_version: 0, decode_time: 1_000, sidx: Some(0), explicit_base: false });
    let out = retime(&seg, &tracks, 2, shift_secs(1)).unwrap();
    assert_eq!(out.len(), seg.len());
    assert_eq!(tfdt_version(&out), 0);
    assert_eq!(fragments(&out, &tracks).unwrap()[0].tracks[0].decode_time, 1_000 + 15_360);
    assert_eq!(sidx_of(&out), (0, 1_000 + 15_360, 0, sidx_of(&seg).3));
    assert_eq!(samples_of(&out), SAMPLES.concat());
}

#[test]
fn version_0_times_past_32_bits_become_version_1_and_offsets_follow() {
    let tracks = init_tracks(&init()).unwrap();
    // 300,000 s at 15,360 Hz is beyond u32.
    let shift = shift_secs(300_000);
    let expected = 1_000 + shift.ticks;
    assert!(expected > u64::from(u32::MAX));
    for sidx in [None, Some(0), Some(1)] {
        for explicit_base in [false, true] {
            let seg = segment(Layout { tfdt_version: 0, decode_time: 1_000, sidx, explicit_base });
            assert_eq!(samples_of(&seg), SAMPLES.concat());
            let out = retime(&seg, &tracks, 9, shift).unwrap();
            let grew = 4 + if sidx == Some(0) { 8 } else { 0 };
            assert_eq!(out.len(), seg.len() + grew, "sidx {sidx:?}, explicit base {explicit_base}");
            assert_eq!(tfdt_version(&out), 1);
            let f = fragments(&out, &tracks).unwrap();
            assert_eq!((f[0].sequence, f[0].tracks[0].decode_time), (9, expected));
            assert_eq!(samples_of(&out), SAMPLES.concat(), "sidx {sidx:?}, explicit base {explicit_base}");
            if sidx.is_some() {
                let (version, ept, first, size) = sidx_of(&out);
                assert_eq!((version, ept, first), (1, expected, 0));
                assert_eq!(size, sidx_of(&seg).3 + 4, "the referenced moof grew by 4 bytes");
                // The reference still ends where the segment does.
                let top = boxes(&out, 0, out.len()).unwrap();
                assert_eq!(find(&top, b"sidx").unwrap().end() + size as usize, out.len());
            }
            // Every box size adds up: the whole segment parses, with the moof 4 bytes larger.
            let top = boxes(&out, 0, out.len()).unwrap();
            let old_top = boxes(&seg, 0, seg.len()).unwrap();
            assert_eq!(find(&top, b"moof").unwrap().len, find(&old_top, b"moof").unwrap().len + 4);
        }
    }
}

#[test]
fn each_fragment_of_a_segment_gets_the_next_sequence_number() {
    let tracks = init_tracks(&init()).unwrap();
    let one = segment(Layout { tfdt_version: 0, decode_time: 0, sidx: None, explicit_base: false });
    let two = [one.clone(), one.clone()].concat();
    let out = retime(&two, &tracks, u32::MAX, shift_secs(300_000)).unwrap();
    let f = fragments(&out, &tracks).unwrap();
    assert_eq!(f.iter().map(|f| f.sequence).collect::<Vec<_>>(), [u32::MAX, 0], "wrapping");
    assert!(f.iter().all(|f| f.tracks[0].decode_time == 300_000 * 15_360));
    let half = out.len() / 2;
    assert_eq!(samples_of(&out[half..]), SAMPLES.concat());
}

#[test]
fn shifts_convert_exactly_or_not_at_all() {
    assert_eq!(Shift { ticks: 3, timescale: 1 }.to(15_360), Ok(46_080));
    assert_eq!(Shift { ticks: 1_000, timescale: 1_000 }.to(15_360), Ok(15_360));
    assert!(matches!(Shift { ticks: 1, timescale: 1_000 }.to(15_360), Err(Mp4Error::InexactShift { .. })));
    let tracks = init_tracks(&init()).unwrap();
    let seg = segment(Layout { tfdt_version: 1, decode_time: 0, sidx: None, explicit_base: false });
    assert!(matches!(
        retime(&seg, &tracks, 1, Shift { ticks: 1, timescale: 7 }),
        Err(Mp4Error::InexactShift { target: TIMESCALE, .. })
    ));
    let seg = segment(Layout { tfdt_version: 1, decode_time: u64::MAX - 1, sidx: None, explicit_base: false });
    assert_eq!(retime(&seg, &tracks, 1, shift_secs(1)), Err(Mp4Error::Overflow("tfdt")));
}

#[test]
fn bad_boxes_are_refused_not_panicked_on() {
    let tracks = init_tracks(&init()).unwrap();
    let seg = segment(Layout { tfdt_version: 1, decode_time: 0, sidx: Some(1), explicit_base: false });
    // Every truncation either still parses (cut at a box boundary) or gives an error; none panics.
    for cut in 0..seg.len() {
        let _ = retime(&seg[..cut], &tracks, 1, shift_secs(1));
        let _ = fragments(&seg[..cut], &tracks);
    }
    // Nor does any single corrupted byte, in any layout.
    for sidx in [Some(0), Some(1)] {
        let seg = segment(Layout { tfdt_version: 0, decode_time: 0, sidx, explicit_base: true });
        for at in 0..seg.len() {
            for v in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut bad = seg.clone();
                bad[at] = v;
                let _ = retime(&bad, &tracks, 1, shift_secs(300_000));
                let _ = fragments(&bad, &tracks);
            }
        }
    }
    assert_eq!(retime(&seg[..seg.len() - 1], &tracks, 1, shift_secs(1)), Err(Mp4Error::Truncated("mdat".into())));
    assert_eq!(retime(&seg[..3], &tracks, 1, shift_secs(1)), Err(Mp4Error::Truncated("box header".into())));
    let mut small = seg.clone();
    small[..4].copy_from_slice(&4u32.to_be_bytes());
    assert_eq!(retime(&small, &tracks, 1, shift_secs(1)), Err(Mp4Error::BadSize("styp".into())));
    assert_eq!(retime(&bx(b"mdat", b"x"), &tracks, 1, shift_secs(1)), Err(Mp4Error::Missing("moof")));
    assert_eq!(fragments(&bx(b"mdat", b"x"), &tracks), Err(Mp4Error::Missing("moof")));
    let other = [Track { id: 2, ..tracks[0] }];
    assert_eq!(retime(&seg, &other, 1, shift_secs(1)), Err(Mp4Error::UnknownTrack(1)));
    let no_tfdt = bx(
        b"moof",
        &[full(b"mfhd", 0, 0, &1u32.to_be_bytes()), bx(b"traf", &full(b"tfhd", 0, 0, &1u32.to_be_bytes()))].concat(),
    );
    assert_eq!(retime(&no_tfdt, &tracks, 1, shift_secs(1)), Err(Mp4Error::Missing("tfdt")));
    assert_eq!(init_tracks(&bx(b"ftyp", b"iso6")), Err(Mp4Error::Missing("moov")));
    // A trun that claims more samples than it holds.
    let mut lying = seg.clone();
    let top = boxes(&lying, 0, lying.len()).unwrap();
    let moof = find(&top, b"moof").unwrap();
    let traf = find(&children(&lying, &moof).unwrap(), b"traf").unwrap();
    let trun = find(&children(&lying, &traf).unwrap(), b"trun").unwrap();
    let at = trun.start + trun.header + 4;
    lying[at..at + 4].copy_from_slice(&1_000_000u32.to_be_bytes());
    assert_eq!(fragments(&lying, &tracks), Err(Mp4Error::Truncated("trun".into())));
}

#[test]
fn large_and_to_the_end_sizes_parse() {
    // A 64-bit size (size 1) and a last box running to the end (size 0).
    let mut large = 1u32.to_be_bytes().to_vec();
    large.extend_from_slice(b"free");
    large.extend_from_slice(&20u64.to_be_bytes());
    large.extend_from_slice(b"abcd");
    let mut to_end = 0u32.to_be_bytes().to_vec();
    to_end.extend_from_slice(b"mdat");
    to_end.extend_from_slice(b"payload");
    let buf = [large, to_end].concat();
    let top = boxes(&buf, 0, buf.len()).unwrap();
    assert_eq!(top.len(), 2);
    assert_eq!((top[0].header, top[0].len, top[1].len), (16, 20, 15));
}
