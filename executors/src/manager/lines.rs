//! Reading lines of bounded length from a pipe or socket.

use std::io;

use tokio::io::{AsyncBufRead, AsyncBufReadExt};

/// One line read by [`next_line`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Line {
    /// The line without its `\n` (or `\r\n`), invalid UTF-8 replaced.
    Text(String),
    /// The line was longer than the limit; it was consumed and dropped.
    TooLong,
}

/// The next line of `r`, holding at most `max` bytes of it in memory;
/// `None` at the end of the stream. A last line without `\n` counts.
pub(crate) async fn next_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    max: usize,
) -> io::Result<Option<Line>> {
    let mut buf = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let chunk = r.fill_buf().await?;
        if chunk.is_empty() {
            if !any {
                return Ok(None);
            }
            break;
        }
        any = true;
        let (content, used, done) = match chunk.iter().position(|&b| b == b'\n') {
            Some(i) => (chunk.get(..i).unwrap_or_default(), i + 1, true),
            None => (chunk, chunk.len(), false),
        };
        if !too_long {
            if buf.len() + content.len() > max {
                too_long = true;
                buf = Vec::new();
            } else {
                buf.extend_from_slice(content);
            }
        }
        r.consume(used);
        if done {
            break;
        }
    }
    if too_long {
        return Ok(Some(Line::TooLong));
    }
    if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(Some(Line::Text(String::from_utf8_lossy(&buf).into_owned())))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn all(input: &[u8], max: usize) -> Vec<Line> {
        // A tiny buffer, so lines span several reads.
        let mut r = tokio::io::BufReader::with_capacity(3, input);
        let mut out = vec![];
        while let Some(l) = next_line(&mut r, max).await.expect("in-memory read") {
            out.push(l);
        }
        out
    }

    fn text(s: &str) -> Line {
        Line::Text(s.to_owned())
    }

    #[test]
    fn bounded_lines() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        rt.block_on(async {
            assert_eq!(all(b"", 8).await, []);
            assert_eq!(
                all(b"ab\r\ncdefghijk\n\nlast", 8).await,
                [text("ab"), Line::TooLong, text(""), text("last")]
            );
            assert_eq!(all(b"12345678\n", 8).await, [text("12345678")]);
            assert_eq!(all(b"\xff\xfe\n", 8).await, [text("\u{fffd}\u{fffd}")]);
        });
    }
}
