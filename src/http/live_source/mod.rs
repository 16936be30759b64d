//! The development live source (in progress): fragmented MP4 retiming and
//! the sliding playlist.

#[allow(dead_code)]
mod mp4;
#[allow(dead_code)]
mod playlist;
