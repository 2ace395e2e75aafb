//! Script output as lines, the same way on both ends (the worker for local scripts, the
//! tentacle for remote ones): each line as soon as it is complete, a line longer than
//! [`MAX_LINE`] split into pieces of that size, so memory stays bounded whatever a script prints.

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
        while let Ok(buf) = self.reader.fill_buf().await {
            if buf.is_empty() {
                break;
            }
            let (take, complete) = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => (i + 1, true),
                None => (buf.len().min(MAX_LINE - self.line.len()), false),
            };
            self.line.extend_from_slice(&buf[..take]);
            self.reader.consume(take);
            if complete || self.line.len() >= MAX_LINE {
                return Some(self.take());
            }
        }
        (!self.line.is_empty()).then(|| self.take())
    }

    fn take(&mut self) -> String {
        while matches!(self.line.last(), Some(b'\n' | b'\r')) {
            self.line.pop();
        }
        let text = String::from_utf8_lossy(&self.line).into_owned();
        self.line.clear();
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
}
