//! A streaming `multipart/form-data` reader for one file (RFC 7578): fed the body as it
//! arrives, it hands out the file part's bytes and keeps only what may be the start of a
//! boundary, so memory stays bounded whatever the file's size. Parts without a file name (form
//! fields) are skipped; a second file is refused.

use memchr::memmem::Finder;

/// Longest header block of one part, and most bytes of a form field or preamble kept.
const MAX_HEADERS: usize = 16 * 1024;
const MAX_FIELD: usize = 64 * 1024;

/// The `boundary` parameter of a `multipart/form-data` content type; `None` for another type.
pub(super) fn boundary(content_type: &str) -> Option<Result<String, String>> {
    let mut parts = content_type.split(';');
    let mime = parts.next()?.trim();
    if !mime.eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    let found = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("boundary")
            .then(|| v.trim().trim_matches('"').to_owned())
    });
    Some(match found {
        Some(b)
            if (1..=70).contains(&b.len())
                && b.bytes().all(|c| c.is_ascii_graphic() || c == b' ') =>
        {
            Ok(b)
        }
        Some(b) => Err(format!(
            "multipart boundary {b:?}: 1 to 70 printable characters"
        )),
        None => Err("multipart/form-data without a boundary parameter".to_owned()),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum State {
    /// Before the first boundary.
    Preamble,
    /// Just after a boundary: `--` (the end) or CRLF (a part's headers) follows.
    AfterBoundary,
    Headers,
    /// In a part's body: the file's (`true`) or a field's.
    Body {
        file: bool,
    },
    Done,
}

/// What the reader found while fed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event<'a> {
    /// The file part begins; its file name (the last component of what the client sent).
    File(String),
    /// Some of the file's bytes.
    Data(&'a [u8]),
}

pub(super) struct Multipart {
    /// `\r\n--{boundary}`; the body is read as if it began with `\r\n`, so the first boundary
    /// looks like every other.
    delimiter: Vec<u8>,
    finder: Finder<'static>,
    buf: Vec<u8>,
    state: State,
    field_bytes: usize,
    files: usize,
}

impl Multipart {
    pub(super) fn new(boundary: &str) -> Multipart {
        let delimiter = format!("\r\n--{boundary}").into_bytes();
        Multipart {
            finder: Finder::new(&delimiter).into_owned(),
            delimiter,
            buf: b"\r\n".to_vec(),
            state: State::Preamble,
            field_bytes: 0,
            files: 0,
        }
    }

    /// Takes the next piece of the body; `on` receives what it yields, in order.
    pub(super) fn feed(
        &mut self,
        chunk: &[u8],
        on: &mut dyn FnMut(Event<'_>) -> Result<(), String>,
    ) -> Result<(), String> {
        if self.state == State::Done {
            return Ok(()); // the epilogue, ignored
        }
        self.buf.extend_from_slice(chunk);
        let mut at = 0;
        loop {
            let rest = &self.buf[at..];
            match self.state {
                State::Done => {
                    at = self.buf.len();
                    break;
                }
                State::Preamble => match self.finder.find(rest) {
                    Some(i) => {
                        at += i + self.delimiter.len();
                        self.state = State::AfterBoundary;
                    }
                    None => {
                        let skipped = rest.len().saturating_sub(self.delimiter.len() - 1);
                        self.field_bytes += skipped;
                        if self.field_bytes > MAX_FIELD {
                            return Err("no multipart boundary in the body's first 64 KiB".into());
                        }
                        at += skipped;
                        break;
                    }
                },
                State::AfterBoundary => {
                    // Transport padding (spaces, tabs) may follow a boundary.
                    let pad = rest
                        .iter()
                        .take_while(|&&c| c == b' ' || c == b'\t')
                        .count();
                    let rest = &rest[pad..];
                    if rest.len() < 2 {
                        break;
                    }
                    if rest.starts_with(b"--") {
                        self.state = State::Done;
                        if self.files == 0 {
                            return Err("the multipart body holds no file part".into());
                        }
                    } else if rest.starts_with(b"\r\n") {
                        self.state = State::Headers;
                    } else {
                        return Err("malformed multipart body: a boundary is followed by \
                                    neither CRLF nor --"
                            .into());
                    }
                    at += pad + 2;
                }
                State::Headers => {
                    let Some(end) = memchr::memmem::find(rest, b"\r\n\r\n") else {
                        if rest.len() > MAX_HEADERS {
                            return Err("a multipart part's headers are over 16 KiB".into());
                        }
                        break;
                    };
                    let headers = String::from_utf8_lossy(&rest[..end]).into_owned();
                    at += end + 4;
                    let file = file_name(&headers)?;
                    self.field_bytes = 0;
                    self.state = State::Body {
                        file: file.is_some(),
                    };
                    if let Some(name) = file {
                        self.files += 1;
                        if self.files > 1 {
                            return Err(
                                "one package per upload: the body holds a second file".into()
                            );
                        }
                        on(Event::File(name))?;
                    }
                }
                State::Body { file } => {
                    let (data, ended) = match self.finder.find(rest) {
                        Some(i) => (&rest[..i], true),
                        None => (
                            &rest[..rest.len().saturating_sub(self.delimiter.len() - 1)],
                            false,
                        ),
                    };
                    if file {
                        if !data.is_empty() {
                            on(Event::Data(data))?;
                        }
                    } else {
                        self.field_bytes += data.len();
                        if self.field_bytes > MAX_FIELD {
                            return Err("a multipart form field is over 64 KiB".into());
                        }
                    }
                    at += data.len();
                    if !ended {
                        break;
                    }
                    at += self.delimiter.len();
                    self.state = State::AfterBoundary;
                }
            }
        }
        self.buf.drain(..at);
        Ok(())
    }

    /// The body ended: was it a whole multipart body with its file?
    pub(super) fn finish(&self) -> Result<(), String> {
        match self.state {
            State::Done => Ok(()),
            _ => Err("the multipart body ended before its closing boundary".into()),
        }
    }
}

/// The file name in a part's `Content-Disposition`, if it names one.
fn file_name(headers: &str) -> Result<Option<String>, String> {
    for line in headers.split("\r\n") {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if !name.trim().eq_ignore_ascii_case("content-disposition") {
            continue;
        }
        for param in value.split(';').skip(1) {
            let Some((k, v)) = param.split_once('=') else {
                continue;
            };
            if k.trim().eq_ignore_ascii_case("filename") {
                let v = v.trim().trim_matches('"');
                // Some clients send a whole path: only its last component names the file.
                let last = v.rsplit(['/', '\\']).next().unwrap_or(v);
                if last.is_empty() {
                    return Err("the file part's filename is empty".into());
                }
                return Ok(Some(last.to_owned()));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(file: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"preamble\r\n--XyZ\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XyZ\r\n");
        b.extend_from_slice(b"Content-Disposition: form-data; name=\"file\"; filename=\"C:\\\\x\\\\Acme.Web.1.0.0.zip\"\r\nContent-Type: application/zip\r\n\r\n");
        b.extend_from_slice(file);
        b.extend_from_slice(b"\r\n--XyZ--\r\nepilogue");
        b
    }

    fn read(body: &[u8], split: usize) -> Result<(String, Vec<u8>), String> {
        let mut m = Multipart::new("XyZ");
        let (mut name, mut data) = (String::new(), Vec::new());
        let mut on = |e: Event<'_>| {
            match e {
                Event::File(n) => name = n,
                Event::Data(d) => data.extend_from_slice(d),
            }
            Ok(())
        };
        for piece in body.chunks(split.max(1)) {
            m.feed(piece, &mut on)?;
        }
        m.finish()?;
        Ok((name, data))
    }

    #[test]
    fn the_file_comes_out_whole_however_the_body_is_split() {
        // Bytes that look like the start of a boundary, inside the file (a whole one may not
        // be there: a client picks a boundary its content does not hold).
        let file = b"ab\r\n--Xy\r\n--X\r\r\n\r\n--XyY--".repeat(3);
        let b = body(&file);
        for split in 1..b.len() {
            let (name, data) = read(&b, split).unwrap();
            assert_eq!(name, "Acme.Web.1.0.0.zip");
            assert_eq!(data, file, "split every {split} bytes");
        }
        let (_, empty) = read(&body(b""), 7).unwrap();
        assert!(empty.is_empty());
    }

    #[test]
    fn bodies_that_are_not_one_whole_file_are_refused() {
        let b = body(b"data");
        let cut = &b[..b.len() - 15];
        assert!(read(cut, 5).unwrap_err().contains("closing boundary"));
        let two = [&b[..b.len() - 14], b"\r\n--XyZ\r\nContent-Disposition: form-data; name=\"f\"; filename=\"b.1.0.0.zip\"\r\n\r\nx\r\n--XyZ--"].concat();
        assert!(read(&two, 3).unwrap_err().contains("second file"));
        let none = b"--XyZ\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nv\r\n--XyZ--";
        assert!(read(none, 4).unwrap_err().contains("no file part"));
        assert!(read(b"--XyZ\r\nbroken", 4).unwrap_err().contains("closing"));
        assert!(read(b"--XyZ!!", 4).unwrap_err().contains("neither CRLF"));
        assert!(read(&vec![b'a'; 70_000], 1000)
            .unwrap_err()
            .contains("no multipart boundary"));
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=\"a b\"")
                .unwrap()
                .unwrap(),
            "a b"
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=x;BOUNDARY=q1")
                .unwrap()
                .unwrap(),
            "q1"
        );
        assert!(boundary("application/octet-stream").is_none());
        assert!(boundary("multipart/form-data").unwrap().is_err());
        assert!(
            boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71)))
                .unwrap()
                .is_err()
        );
    }
}
