//! The `TracingRecord` encoding (`proto/ringside/v1/tracing.proto`), by hand: plain
//! protobuf written straight into byte buffers, without allocating.
//!
//! A record is written in three parts. The fields (the message included) are visited first
//! into a bounded per-thread scratch buffer, each as a complete protobuf entry ([`Fields`]);
//! the fixed parts (kind, level, target, name, location, span ids, durations) have lengths
//! known from the metadata ([`Head`]). The record's exact size is then known before its
//! frame is reserved in the ring, and [`Head::write`] fills the reservation in place.

use std::fmt::{self, Write as _};

use tracing::Level;
use tracing::field::{Field, Visit};

/// Longest target, name or file name written; longer ones are cut (and the record marked
/// truncated). Keeps the fixed part of a record small whatever the metadata says.
pub(crate) const MAX_META_STR: usize = 255;

/// Bytes a length-delimited value's length may take while it is being written: enough for
/// any record (the layer caps records at [`crate::MAX_RECORD_LIMIT`], well below 2 MiB).
const LEN_GAP: usize = 3;

// Field numbers and wire types of `TracingRecord` and `TracingField`.
const VARINT: u8 = 0;
const I64: u8 = 1;
const LEN: u8 = 2;

const fn key(field: u8, wire: u8) -> u8 {
    (field << 3) | wire
}

const REC_KIND: u8 = key(1, VARINT);
const REC_LEVEL: u8 = key(2, VARINT);
const REC_TARGET: u8 = key(3, LEN);
const REC_NAME: u8 = key(4, LEN);
const REC_MESSAGE: u8 = key(5, LEN);
const REC_FIELD: u8 = key(6, LEN);
const REC_FILE: u8 = key(7, LEN);
const REC_LINE: u8 = key(8, VARINT);
const REC_SPAN_ID: u8 = key(9, VARINT);
const REC_PARENT: u8 = key(10, VARINT);
const REC_DURATION: u8 = key(11, VARINT);
const REC_BUSY: u8 = key(12, VARINT);
const REC_SPAN_NAME: u8 = key(13, LEN);
const REC_TRUNCATED: u8 = key(15, VARINT);

const FIELD_NAME: u8 = key(1, LEN);
const FIELD_STR: u8 = key(2, LEN);
const FIELD_I64: u8 = key(3, VARINT);
const FIELD_U64: u8 = key(4, VARINT);
const FIELD_F64: u8 = key(5, I64);
const FIELD_BOOL: u8 = key(6, VARINT);

/// `TracingRecord.Kind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Event = 0,
    SpanClose = 1,
}

/// Bytes of `v` as a protobuf varint.
pub(crate) const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    bits.div_ceil(7)
}

/// Writes `v` as a varint into `out` (at least 10 bytes), returning its length.
fn put_varint(out: &mut [u8; 10], mut v: u64) -> usize {
    let mut n = 0;
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out[n] = byte;
            return n + 1;
        }
        out[n] = byte | 0x80;
        n += 1;
    }
}

fn level_number(level: &Level) -> u64 {
    match *level {
        Level::TRACE => 1,
        Level::DEBUG => 2,
        Level::INFO => 3,
        Level::WARN => 4,
        Level::ERROR => 5,
    }
}

/// `s` cut to at most `max` bytes at a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Bytes of a length-delimited entry (key, length, content).
const fn len_entry(content: usize) -> usize {
    1 + varint_len(content as u64) + content
}

/// Bytes of a varint entry (key, value).
const fn varint_entry(v: u64) -> usize {
    1 + varint_len(v)
}

/// Writes into a fixed slice (a reservation in the ring). Never panics: a write past the
/// end is dropped and remembered, and the caller discards the frame (the sizes are computed
/// from the same inputs, so this does not happen).
pub(crate) struct SliceWriter<'a> {
    buf: &'a mut [u8],
    pos: usize,
    overflow: bool,
}

impl<'a> SliceWriter<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        SliceWriter {
            buf,
            pos: 0,
            overflow: false,
        }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) {
        match self.buf.get_mut(self.pos..self.pos + bytes.len()) {
            Some(dst) => {
                dst.copy_from_slice(bytes);
                self.pos += bytes.len();
            }
            None => self.overflow = true,
        }
    }

    fn varint(&mut self, v: u64) {
        let mut tmp = [0u8; 10];
        let n = put_varint(&mut tmp, v);
        self.put(&tmp[..n]);
    }

    fn varint_field(&mut self, key: u8, v: u64) {
        self.put(&[key]);
        self.varint(v);
    }

    fn bytes_field(&mut self, key: u8, bytes: &[u8]) {
        self.put(&[key]);
        self.varint(bytes.len() as u64);
        self.put(bytes);
    }

    /// True when exactly the whole slice was written.
    pub(crate) fn complete(&self) -> bool {
        !self.overflow && self.pos == self.buf.len()
    }
}

/// The fixed parts of a record: everything but the visited fields.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head<'a> {
    pub(crate) kind: Kind,
    pub(crate) level: &'a Level,
    pub(crate) target: &'a str,
    pub(crate) name: &'a str,
    pub(crate) file: Option<&'a str>,
    pub(crate) line: Option<u32>,
    pub(crate) span_id: u64,
    pub(crate) parent_span_id: u64,
    pub(crate) duration_ns: u64,
    pub(crate) busy_ns: u64,
    /// Event: the name of the span it happened in ("" for none).
    pub(crate) span_name: &'a str,
}

impl Head<'_> {
    /// True when a metadata string had to be cut.
    pub(crate) fn cuts_metadata(&self) -> bool {
        self.target.len() > MAX_META_STR
            || self.name.len() > MAX_META_STR
            || self.span_name.len() > MAX_META_STR
            || self.file.is_some_and(|f| f.len() > MAX_META_STR)
    }

    fn optional_varint(v: u64) -> usize {
        if v == 0 { 0 } else { varint_entry(v) }
    }

    fn optional_str(s: &str) -> usize {
        if s.is_empty() {
            0
        } else {
            len_entry(cut(s, MAX_META_STR).len())
        }
    }

    /// Encoded bytes of the fixed parts (with the truncation flag when `truncated`).
    pub(crate) fn len(&self, truncated: bool) -> usize {
        Self::optional_varint(self.kind as u64)
            + varint_entry(level_number(self.level))
            + Self::optional_str(self.target)
            + Self::optional_str(self.name)
            + self.file.map_or(0, Self::optional_str)
            + self.line.map_or(0, |l| Self::optional_varint(u64::from(l)))
            + Self::optional_varint(self.span_id)
            + Self::optional_varint(self.parent_span_id)
            + Self::optional_varint(self.duration_ns)
            + Self::optional_varint(self.busy_ns)
            + Self::optional_str(self.span_name)
            + if truncated { 2 } else { 0 }
    }

    /// Writes the whole record: the fixed parts around `fields` (complete entries from
    /// [`Fields`]).
    pub(crate) fn write(&self, out: &mut SliceWriter<'_>, fields: &[u8], truncated: bool) {
        let varint = |out: &mut SliceWriter<'_>, key: u8, v: u64| {
            if v != 0 {
                out.varint_field(key, v);
            }
        };
        let string = |out: &mut SliceWriter<'_>, key: u8, s: &str| {
            if !s.is_empty() {
                out.bytes_field(key, cut(s, MAX_META_STR).as_bytes());
            }
        };
        varint(out, REC_KIND, self.kind as u64);
        out.varint_field(REC_LEVEL, level_number(self.level));
        string(out, REC_TARGET, self.target);
        string(out, REC_NAME, self.name);
        out.put(fields);
        if let Some(file) = self.file {
            string(out, REC_FILE, file);
        }
        if let Some(line) = self.line {
            varint(out, REC_LINE, u64::from(line));
        }
        varint(out, REC_SPAN_ID, self.span_id);
        varint(out, REC_PARENT, self.parent_span_id);
        varint(out, REC_DURATION, self.duration_ns);
        varint(out, REC_BUSY, self.busy_ns);
        string(out, REC_SPAN_NAME, self.span_name);
        if truncated {
            out.put(&[REC_TRUNCATED, 1]);
        }
    }
}

/// A `Visit` that appends each field as a complete protobuf entry (`message` as
/// `TracingRecord.message`, the others as `TracingRecord.fields`) to `buf`, never letting
/// it grow past `limit` bytes: a value that does not fit is cut at a character boundary,
/// an entry that does not fit at all is left out, and `truncated` is set.
///
/// The caller gives a buffer whose capacity is at least `limit`, so nothing here allocates.
pub(crate) struct Fields<'a> {
    buf: &'a mut Vec<u8>,
    limit: usize,
    /// Set when anything was cut or left out.
    pub(crate) truncated: bool,
    /// Skip the `log.*` fields a `log` record carries (they are its metadata).
    skip_log_fields: bool,
}

impl<'a> Fields<'a> {
    pub(crate) fn new(buf: &'a mut Vec<u8>, limit: usize, skip_log_fields: bool) -> Self {
        debug_assert!(buf.capacity() >= limit, "scratch smaller than the limit");
        Fields {
            buf,
            limit,
            truncated: false,
            skip_log_fields,
        }
    }

    fn room(&self) -> usize {
        self.limit.saturating_sub(self.buf.len())
    }

    /// Appends `bytes` if they fit.
    fn push(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() <= self.room() {
            self.buf.extend_from_slice(bytes);
            true
        } else {
            false
        }
    }

    fn push_varint(&mut self, v: u64) -> bool {
        let mut tmp = [0u8; 10];
        let n = put_varint(&mut tmp, v);
        self.push(&tmp[..n])
    }

    /// Starts a length-delimited value: its key and a gap for the length.
    fn open(&mut self, key: u8) -> Option<usize> {
        if self.room() < 1 + LEN_GAP {
            return None;
        }
        self.buf.push(key);
        let gap = self.buf.len();
        self.buf.extend_from_slice(&[0; LEN_GAP]);
        Some(gap)
    }

    /// Ends the value opened at `gap`: writes its length and closes the gap.
    fn close(&mut self, gap: usize) {
        let start = gap + LEN_GAP;
        let len = self.buf.len() - start;
        let mut tmp = [0u8; 10];
        let n = put_varint(&mut tmp, len as u64);
        // n <= LEN_GAP: values are bounded by the limit (asserted by the layer's cap).
        self.buf.copy_within(start.., gap + n);
        self.buf.truncate(gap + n + len);
        self.buf[gap..gap + n].copy_from_slice(&tmp[..n]);
    }

    /// Appends string bytes, cut at a character boundary to what fits.
    fn push_str_cut(&mut self, s: &str) {
        let part = cut(s, self.room());
        if part.len() < s.len() {
            self.truncated = true;
        }
        self.buf.extend_from_slice(part.as_bytes());
    }

    /// Starts a `fields` entry named `name`, returning the outer gap (None: no room, and
    /// the buffer is as it was).
    fn begin_field(&mut self, name: &str) -> Option<usize> {
        let mark = self.buf.len();
        let Some(outer) = self.open(REC_FIELD) else {
            self.truncated = true;
            return None;
        };
        let name_ok = self.push(&[FIELD_NAME])
            && self.push_varint(name.len() as u64)
            && self.push(name.as_bytes());
        if name_ok {
            Some(outer)
        } else {
            self.buf.truncate(mark);
            self.truncated = true;
            None
        }
    }

    /// A `fields` entry with a fixed-size value (`encode` writes key and value).
    fn scalar(&mut self, name: &str, encode: impl FnOnce(&mut Self) -> bool) {
        let mark = self.buf.len();
        let Some(outer) = self.begin_field(name) else {
            return;
        };
        if encode(self) {
            self.close(outer);
        } else {
            self.buf.truncate(mark);
            self.truncated = true;
        }
    }

    /// A string value: the message, or a `fields` entry.
    fn text(&mut self, field: &Field, write: impl FnOnce(&mut Self)) {
        let mark = self.buf.len();
        if field.name() == "message" {
            match self.open(REC_MESSAGE) {
                Some(gap) => {
                    write(self);
                    self.close(gap);
                }
                None => self.truncated = true,
            }
            return;
        }
        let Some(outer) = self.begin_field(field.name()) else {
            return;
        };
        match self.open(FIELD_STR) {
            Some(inner) => {
                write(self);
                self.close(inner);
                self.close(outer);
            }
            None => {
                self.buf.truncate(mark);
                self.truncated = true;
            }
        }
    }

    fn skipped(&self, field: &Field) -> bool {
        self.skip_log_fields && field.name().starts_with("log.")
    }
}

/// `fmt::Write` into the bounded buffer: stops (with an error, which ends the formatting)
/// at the limit, after writing what fits up to a character boundary.
struct Bounded<'a, 'b>(&'a mut Fields<'b>);

impl fmt::Write for Bounded<'_, '_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let fits = s.len() <= self.0.room();
        self.0.push_str_cut(s);
        if fits { Ok(()) } else { Err(fmt::Error) }
    }
}

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.skipped(field) {
            return;
        }
        self.text(field, |fields| {
            // An error here only means the value was cut at the limit (already noted).
            let _ = write!(Bounded(fields), "{value:?}");
        });
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if self.skipped(field) {
            return;
        }
        self.text(field, |fields| fields.push_str_cut(value));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.skipped(field) {
            return;
        }
        let zigzag = ((value << 1) ^ (value >> 63)) as u64;
        self.scalar(field.name(), |f| {
            f.push(&[FIELD_I64]) && f.push_varint(zigzag)
        });
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.skipped(field) {
            return;
        }
        self.scalar(field.name(), |f| {
            f.push(&[FIELD_U64]) && f.push_varint(value)
        });
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        if self.skipped(field) {
            return;
        }
        self.scalar(field.name(), |f| {
            f.push(&[FIELD_F64]) && f.push(&value.to_le_bytes())
        });
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.skipped(field) {
            return;
        }
        self.scalar(field.name(), |f| {
            f.push(&[FIELD_BOOL]) && f.push(&[u8::from(value)])
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths() {
        for (v, n) in [
            (0u64, 1),
            (1, 1),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (u64::MAX, 10),
        ] {
            assert_eq!(varint_len(v), n, "{v}");
            let mut tmp = [0u8; 10];
            assert_eq!(put_varint(&mut tmp, v), n, "{v}");
        }
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }

    #[test]
    fn slice_writer_never_writes_past_the_end() {
        let mut buf = [0u8; 3];
        let mut w = SliceWriter::new(&mut buf);
        w.put(&[1, 2]);
        w.put(&[3, 4]);
        assert!(!w.complete());
        w.put(&[3]);
        assert!(!w.complete(), "an overflow is remembered");
        assert_eq!(buf, [1, 2, 3]);
    }
}
