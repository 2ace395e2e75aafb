//! Script output as lines, the same way on both ends (the worker for local scripts, the
//! tentacle for remote ones): each line as soon as it is complete, a line longer than
//! [`MAX_LINE`] split into pieces of at most that size (never inside a UTF-8 character), so
//! memory stays bounded whatever a script prints. A piece says whether its line goes on, so
//! whoever masks secrets can mask one that straddles two pieces.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// Longest line kept whole, in bytes.
pub const MAX_LINE: usize = 64 * 1024;

/// Reads `r` line by line.
pub struct OutputLines<R> {
    reader: BufReader<R>,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> OutputLines<R> {
    pub fn new(r: R) -> Self {
        OutputLines {
            reader: BufReader::with_capacity(MAX_LINE, r),
            line: Vec::new(),
        }
    }

    /// The next line without its line ending (invalid UTF-8 replaced), or `None` at the end of
    /// the output or on a read error. A last line without a newline is returned too.
    pub async fn next_line(&mut self) -> Option<String> {
        self.next_piece().await.map(|(text, _)| text)
    }

    /// The next piece of output: a whole line, or — for a line longer than [`MAX_LINE`] — the
    /// next part of it, with `true` while the line goes on in the next piece.
    pub async fn next_piece(&mut self) -> Option<(String, bool)> {
        while let Ok(buf) = self.reader.fill_buf().await {
            if buf.is_empty() {
                break;
            }
            // A line ends here only if it fits; a longer one is split at MAX_LINE however the
            // reads happen to fall.
            let (take, complete) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) if self.line.len() + i <= MAX_LINE => (i + 1, true),
                _ => (buf.len().min(MAX_LINE - self.line.len()), false),
            };
            self.line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if complete {
                return Some((self.take(self.line.len()), false));
            }
            if self.line.len() >= MAX_LINE {
                // Cut before a character the piece would end in the middle of.
                let cut = match std::str::from_utf8(&self.line) {
                    Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => e.valid_up_to(),
                    _ => self.line.len(),
                };
                return Some((self.take(cut), true));
            }
        }
        (!self.line.is_empty())
            .then(|| self.take(self.line.len()))
            .map(|t| (t, false))
    }

    /// The first `n` bytes as text (a line's ending dropped); the rest stays for the next piece.
    fn take(&mut self, n: usize) -> String {
        let rest = self.line.split_off(n);
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line = rest;
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8]) -> Vec<String> {
        let mut lines = OutputLines::new(input);
        let mut out = Vec::new();
        while let Some(l) = lines.next_line().await {
            out.push(l);
        }
        out
    }

    #[tokio::test]
    async fn lines_endings_and_a_last_line_without_newline() {
        assert_eq!(
            all(b"one\ntwo\r\n\nno newline").await,
            vec!["one", "two", "", "no newline"]
        );
        assert!(all(b"").await.is_empty());
        assert_eq!(all(b"bad \xff byte\n").await, vec!["bad \u{fffd} byte"]);
    }

    #[tokio::test]
    async fn long_lines_are_split_at_max_line() {
        let input = vec![b'x'; MAX_LINE * 2 + 10];
        let lines = all(&input).await;
        let lens: Vec<usize> = lines.iter().map(String::len).collect();
        assert_eq!(lens, vec![MAX_LINE, MAX_LINE, 10]);
    }

    #[tokio::test]
    async fn a_line_just_over_max_line_is_split_however_it_is_read() {
        // Read in small chunks (as from a pipe), the end of the line arrives in the same read
        // as the bytes past MAX_LINE: still split there.
        let mut input = vec![b'y'; MAX_LINE + 22];
        input.push(b'\n');
        let (client, mut server) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for chunk in input.chunks(4000) {
                server.write_all(chunk).await.unwrap();
            }
        });
        let mut lines = OutputLines::new(client);
        let first = lines.next_piece().await.unwrap();
        let second = lines.next_piece().await.unwrap();
        writer.await.unwrap();
        assert_eq!((first.0.len(), first.1), (MAX_LINE, true));
        assert_eq!((second.0.len(), second.1), (22, false));
    }

    #[tokio::test]
    async fn pieces_say_whether_their_line_goes_on_and_keep_characters_whole() {
        // A three-byte character across the MAX_LINE boundary, then a short line.
        let mut input = vec![b'x'; MAX_LINE - 1];
        input.extend_from_slice("€ end\nnext\n".as_bytes());
        let mut lines = OutputLines::new(&input[..]);
        let mut pieces = Vec::new();
        while let Some(p) = lines.next_piece().await {
            pieces.push(p);
        }
        assert_eq!(
            pieces.len(),
            3,
            "{:?}",
            pieces.iter().map(|(t, c)| (t.len(), c)).collect::<Vec<_>>()
        );
        assert_eq!((pieces[0].0.len(), pieces[0].1), (MAX_LINE - 1, true));
        assert_eq!(pieces[1], ("€ end".to_owned(), false));
        assert_eq!(pieces[2], ("next".to_owned(), false));
    }
}
