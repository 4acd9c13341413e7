//! Counting the rows of a binary COPY stream as it passes through, for progress and the
//! summary. Text COPY ends each row with a newline; binary COPY has no such mark, so the
//! stream is followed through its framing: an 11-byte signature, a 32-bit flags word and a
//! header extension of a given length, then per tuple a 16-bit field count and per field a
//! 32-bit length (-1 for NULL) and that many bytes, and a field count of -1 as the trailer.
//! Nothing is copied or allocated: one green COPY goes to one blue COPY byte for byte, header
//! and trailer included, so the stream needs no rewriting; this only counts.

/// Signature and flags word, skipped before the header extension's length.
const HEADER: u64 = 11 + 4;

/// The word the stream carries next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Word {
    ExtensionLength,
    FieldCount,
    FieldLength,
    /// The trailer was read (or the stream cannot be followed): nothing more is counted.
    End,
}

impl Word {
    fn width(self) -> usize {
        match self {
            Word::FieldCount => 2,
            _ => 4,
        }
    }
}

/// Follows a binary COPY stream fed in pieces cut anywhere, counting tuples.
#[derive(Debug)]
pub struct BinaryRows {
    /// Bytes to pass over before the next word.
    skip: u64,
    next: Word,
    word: [u8; 4],
    filled: usize,
    fields_left: u16,
}

impl Default for BinaryRows {
    fn default() -> Self {
        BinaryRows {
            skip: HEADER,
            next: Word::ExtensionLength,
            word: [0; 4],
            filled: 0,
            fields_left: 0,
        }
    }
}

impl BinaryRows {
    /// Reads the next piece of the stream; returns the tuples that start in it.
    pub fn feed(&mut self, mut data: &[u8]) -> u64 {
        let mut rows = 0;
        while !data.is_empty() && self.next != Word::End {
            if self.skip > 0 {
                let n = self.skip.min(data.len() as u64);
                self.skip -= n;
                data = &data[n as usize..];
                continue;
            }
            let need = self.next.width();
            let n = (need - self.filled).min(data.len());
            self.word[self.filled..self.filled + n].copy_from_slice(&data[..n]);
            self.filled += n;
            data = &data[n..];
            if self.filled == need {
                self.filled = 0;
                rows += self.word_read();
            }
        }
        rows
    }

    /// Acts on a complete word; returns 1 when it starts a tuple.
    fn word_read(&mut self) -> u64 {
        match self.next {
            Word::ExtensionLength => {
                let len = i32::from_be_bytes(self.word);
                self.skip = len.max(0) as u64;
                self.next = Word::FieldCount;
                0
            }
            Word::FieldCount => {
                let count = i16::from_be_bytes([self.word[0], self.word[1]]);
                if count < 0 {
                    self.next = Word::End;
                    return 0;
                }
                self.fields_left = count as u16;
                self.next = if count > 0 { Word::FieldLength } else { Word::FieldCount };
                1
            }
            Word::FieldLength => {
                let len = i32::from_be_bytes(self.word);
                if len < -1 {
                    self.next = Word::End;
                    return 0;
                }
                self.skip = len.max(0) as u64;
                self.fields_left -= 1;
                if self.fields_left == 0 {
                    self.next = Word::FieldCount;
                }
                0
            }
            Word::End => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY stream of `rows`, each a list of fields (`None` is NULL), with a header
    /// extension of `ext` bytes.
    fn stream(rows: &[Vec<Option<&[u8]>>], ext: usize) -> Vec<u8> {
        let mut s = b"PGCOPY\n\xff\r\n\0".to_vec();
        s.extend_from_slice(&0i32.to_be_bytes());
        s.extend_from_slice(&(ext as i32).to_be_bytes());
        s.extend(std::iter::repeat_n(7u8, ext));
        for row in rows {
            s.extend_from_slice(&(row.len() as i16).to_be_bytes());
            for field in row {
                match field {
                    None => s.extend_from_slice(&(-1i32).to_be_bytes()),
                    Some(v) => {
                        s.extend_from_slice(&(v.len() as i32).to_be_bytes());
                        s.extend_from_slice(v);
                    }
                }
            }
        }
        s.extend_from_slice(&(-1i16).to_be_bytes());
        s
    }

    fn rows() -> Vec<Vec<Option<&'static [u8]>>> {
        vec![
            vec![Some(&[0, 0, 0, 1][..]), Some(b"alice"), None],
            vec![Some(&[0, 0, 0, 2][..]), Some(b""), Some(&[0xff; 300][..])],
            vec![],
            vec![None, None, None],
        ]
    }

    #[test]
    fn every_tuple_is_counted_once_the_trailer_ends_the_count() {
        let s = stream(&rows(), 0);
        let mut counter = BinaryRows::default();
        assert_eq!(counter.feed(&s), 4);
        // Whatever follows the trailer is not a tuple.
        assert_eq!(counter.feed(&[0, 1, 0, 0, 0, 0]), 0);
    }

    #[test]
    fn pieces_cut_anywhere_count_the_same() {
        let s = stream(&rows(), 5);
        for cut in 0..=s.len() {
            let mut counter = BinaryRows::default();
            let n = counter.feed(&s[..cut]) + counter.feed(&s[cut..]);
            assert_eq!(n, 4, "cut at {cut}");
        }
        // Byte by byte.
        let mut counter = BinaryRows::default();
        assert_eq!(s.iter().map(|b| counter.feed(std::slice::from_ref(b))).sum::<u64>(), 4);
    }

    #[test]
    fn an_empty_copy_has_no_rows() {
        assert_eq!(BinaryRows::default().feed(&stream(&[], 0)), 0);
    }

    #[test]
    fn a_stream_it_cannot_follow_stops_the_count_without_panicking() {
        let mut s = stream(&rows()[..1], 0);
        // The first field's length becomes -7.
        s[21..25].copy_from_slice(&(-7i32).to_be_bytes());
        assert_eq!(BinaryRows::default().feed(&s), 1);
    }
}
