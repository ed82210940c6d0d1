//! A shim that lets the gRPC clients of py-spiffe and java-spiffe call the Workload API.
//!
//! gRPC C-core (Python, since grpcio 1.57) and grpc-java send a Unix socket's path as the HTTP/2
//! `:authority` (`tmp%2Fagent%2Fapi.sock`, `/run/agent/api.sock`), which is not an authority;
//! the h2 crate under tonic refuses such a request with `RST_STREAM(PROTOCOL_ERROR)`
//! (hyperium/h2#442 and the open hyperium/h2#487; grpc/grpc#38142). grpc-go sends `localhost`,
//! which is why SPIRE's Go server never sees the problem. A Workload API that py-spiffe cannot
//! call is no Workload API, so the agent reads the client's side of each connection through
//! [`AuthorityFix`] before h2 does: every header block is decoded (HPACK, loona-hpack) and
//! written again as plain literals, with an `:authority` that is not an authority replaced by
//! `localhost`. Nothing else changes; nothing reads `:authority` on this socket.
//!
//! Every header block is re-encoded (not only the ones with a bad authority) so that the client's
//! HPACK dynamic table lives only in this decoder: h2 sees literals that never index, and the
//! two tables can never disagree.
//!
//! Bounds: frames of at most h2's default `SETTINGS_MAX_FRAME_SIZE` (16 KiB, which tonic keeps),
//! header blocks of at most [`MAX_BLOCK`] bytes compressed and decoded, the dynamic table at
//! h2's default 4 KiB.

use loona_hpack::Decoder;

/// The client connection preface (RFC 9113, section 3.4).
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// h2's `SETTINGS_MAX_FRAME_SIZE` (the default, which tonic does not change): no client frame
/// is larger.
const MAX_FRAME: usize = 16_384;
/// The largest header block, compressed or decoded. Workload API requests carry a few headers.
pub(super) const MAX_BLOCK: usize = 64 * 1024;
/// h2's `SETTINGS_HEADER_TABLE_SIZE` (the default): the client's encoder table is at most this.
const TABLE_SIZE: usize = 4_096;
const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;
/// What replaces an `:authority` that is not one.
const LOCALHOST: &[u8] = b"localhost";

/// Why a connection's bytes cannot be passed on; the connection is closed.
#[derive(Debug, thiserror::Error)]
pub(super) enum FixError {
    #[error("not an HTTP/2 client connection preface")]
    Preface,
    #[error("a frame of {0} bytes, over the {MAX_FRAME} allowed")]
    FrameTooLarge(usize),
    #[error("a header block over {MAX_BLOCK} bytes")]
    BlockTooLarge,
    #[error("a malformed HEADERS frame")]
    Malformed,
    #[error("a frame inside a header block, or a CONTINUATION outside one")]
    Interleaved,
    #[error("HPACK: {0}")]
    Hpack(String),
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Pending {
    stream: [u8; 4],
    end_stream: bool,
    block: Vec<u8>,
}

/// The client-to-server bytes of one HTTP/2 connection, with header blocks re-encoded.
pub(super) struct AuthorityFix {
    preface_seen: usize,
    input: Vec<u8>,
    decoder: Decoder<'static>,
    pending: Option<Pending>,
}

impl std::fmt::Debug for AuthorityFix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthorityFix")
            .field("buffered", &self.input.len())
            .finish_non_exhaustive()
    }
}

impl AuthorityFix {
    pub(super) fn new() -> Self {
        let mut decoder = Decoder::new();
        decoder.set_max_allowed_table_size(TABLE_SIZE);
        Self {
            preface_seen: 0,
            input: Vec::new(),
            decoder,
            pending: None,
        }
    }

    /// Takes bytes the client sent and appends what h2 should read to `out`. Bytes of an
    /// incomplete frame are kept for the next call.
    pub(super) fn feed(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), FixError> {
        let mut data = data;
        if self.preface_seen < PREFACE.len() {
            let n = data.len().min(PREFACE.len() - self.preface_seen);
            if data[..n] != PREFACE[self.preface_seen..self.preface_seen + n] {
                return Err(FixError::Preface);
            }
            out.extend_from_slice(&data[..n]);
            self.preface_seen += n;
            data = &data[n..];
        }
        self.input.extend_from_slice(data);
        let mut at = 0;
        while let Some(header) = self.input.get(at..at + FRAME_HEADER) {
            let len =
                usize::from(header[0]) << 16 | usize::from(header[1]) << 8 | usize::from(header[2]);
            if len > MAX_FRAME {
                return Err(FixError::FrameTooLarge(len));
            }
            let Some(frame) = self.input.get(at..at + FRAME_HEADER + len) else {
                break;
            };
            let (kind, flags) = (frame[3], frame[4]);
            let stream = [frame[5], frame[6], frame[7], frame[8]];
            let payload = &frame[FRAME_HEADER..];
            match (kind, self.pending.as_mut()) {
                (HEADERS, None) => {
                    let fragment = headers_fragment(flags, payload)?;
                    let pending = Pending {
                        stream,
                        end_stream: flags & END_STREAM != 0,
                        block: fragment.to_vec(),
                    };
                    if flags & END_HEADERS != 0 {
                        emit(&mut self.decoder, &pending, out)?;
                    } else {
                        self.pending = Some(pending);
                    }
                }
                (CONTINUATION, Some(pending)) if pending.stream == stream => {
                    if pending.block.len() + payload.len() > MAX_BLOCK {
                        return Err(FixError::BlockTooLarge);
                    }
                    pending.block.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 {
                        if let Some(pending) = self.pending.take() {
                            emit(&mut self.decoder, &pending, out)?;
                        }
                    }
                }
                (CONTINUATION, _) | (_, Some(_)) => return Err(FixError::Interleaved),
                (_, None) => out.extend_from_slice(frame),
            }
            at += FRAME_HEADER + len;
        }
        self.input.drain(..at);
        Ok(())
    }
}

/// The header block fragment of a HEADERS frame, without padding and priority.
fn headers_fragment(flags: u8, payload: &[u8]) -> Result<&[u8], FixError> {
    let mut p = payload;
    let mut pad = 0;
    if flags & PADDED != 0 {
        let (&n, rest) = p.split_first().ok_or(FixError::Malformed)?;
        pad = usize::from(n);
        p = rest;
    }
    if flags & PRIORITY != 0 {
        p = p.get(5..).ok_or(FixError::Malformed)?;
    }
    p.get(..p.len().checked_sub(pad).ok_or(FixError::Malformed)?)
        .ok_or(FixError::Malformed)
}

/// Decodes `pending.block` and writes it as HEADERS (+ CONTINUATION) frames of literals.
fn emit(
    decoder: &mut Decoder<'static>,
    pending: &Pending,
    out: &mut Vec<u8>,
) -> Result<(), FixError> {
    let mut block = Vec::with_capacity(pending.block.len() * 2);
    let mut decoded = 0usize;
    let mut too_large = false;
    decoder
        .decode_with_cb(&pending.block, |name, value| {
            decoded += name.len() + value.len();
            if decoded > MAX_BLOCK {
                too_large = true;
                return;
            }
            let value: &[u8] = if &*name == b":authority" && !is_authority(&value) {
                LOCALHOST
            } else {
                &value
            };
            // Literal Header Field without Indexing, new name (RFC 7541, section 6.2.2).
            block.push(0);
            put_string(&name, &mut block);
            put_string(value, &mut block);
        })
        .map_err(|e| FixError::Hpack(e.to_string()))?;
    if too_large {
        return Err(FixError::BlockTooLarge);
    }
    let mut chunks = block.chunks(MAX_FRAME);
    let first = chunks.next().unwrap_or_default();
    let mut rest = chunks.peekable();
    let mut flags = if pending.end_stream { END_STREAM } else { 0 };
    if rest.peek().is_none() {
        flags |= END_HEADERS;
    }
    put_frame(HEADERS, flags, pending.stream, first, out);
    while let Some(chunk) = rest.next() {
        let flags = if rest.peek().is_none() {
            END_HEADERS
        } else {
            0
        };
        put_frame(CONTINUATION, flags, pending.stream, chunk, out);
    }
    Ok(())
}

fn is_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

fn put_frame(kind: u8, flags: u8, stream: [u8; 4], payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len();
    // `len` is at most MAX_FRAME (chunks of it), so it fits in 24 bits.
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream);
    out.extend_from_slice(payload);
}

/// A string literal, not Huffman-coded (RFC 7541, section 5.2).
fn put_string(s: &[u8], out: &mut Vec<u8>) {
    put_integer(s.len(), 7, out);
    out.extend_from_slice(s);
}

/// An integer with an N-bit prefix, the prefix's other bits zero (RFC 7541, section 5.1).
fn put_integer(mut value: usize, prefix_bits: u32, out: &mut Vec<u8>) {
    let max = (1usize << prefix_bits) - 1;
    if value < max {
        out.push(value as u8);
        return;
    }
    out.push(max as u8);
    value -= max;
    while value >= 128 {
        out.push((value % 128 + 128) as u8);
        value /= 128;
    }
    out.push(value as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use loona_hpack::Encoder;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        put_frame(kind, flags, stream.to_be_bytes(), payload, &mut out);
        out
    }

    /// Splits `bytes` (after the preface) into frames: (kind, flags, stream, payload).
    fn frames(bytes: &[u8]) -> Vec<(u8, u8, u32, Vec<u8>)> {
        let mut at = PREFACE.len();
        let mut out = Vec::new();
        while at < bytes.len() {
            let h = &bytes[at..at + 9];
            let len = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]);
            out.push((h[3], h[4], stream, bytes[at + 9..at + 9 + len].to_vec()));
            at += 9 + len;
        }
        out
    }

    fn request(encoder: &mut Encoder<'_>, authority: &[u8], path: &[u8]) -> Vec<u8> {
        encoder.encode([
            (&b":method"[..], &b"POST"[..]),
            (b":scheme", b"http"),
            (b":path", path),
            (b":authority", authority),
            (b"workload.spiffe.io", b"true"),
        ])
    }

    #[test]
    fn a_socket_path_authority_becomes_localhost_and_the_rest_is_kept() {
        let mut client = Encoder::new();
        // Two requests on one connection: the second refers to the first's table entries.
        let first = request(
            &mut client,
            b"tmp%2Fagent%2Fapi.sock",
            b"/SpiffeWorkloadAPI/FetchX509SVID",
        );
        let second = request(
            &mut client,
            b"tmp%2Fagent%2Fapi.sock",
            b"/SpiffeWorkloadAPI/FetchX509SVID",
        );
        assert!(second.len() < first.len(), "the client indexes");
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
                                             // The first block split over HEADERS (padded, with priority) and a CONTINUATION.
        let (a, b) = first.split_at(first.len() / 2);
        let mut padded = vec![3u8];
        padded.extend_from_slice(&[0, 0, 0, 0, 16]);
        padded.extend_from_slice(a);
        padded.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY, 1, &padded));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, b));
        input.extend(frame(0x0, END_STREAM, 1, b"data"));
        input.extend(frame(HEADERS, END_HEADERS | END_STREAM, 3, &second));

        let mut fix = AuthorityFix::new();
        let mut out = Vec::new();
        // Byte by byte: frames cut anywhere are put together.
        for byte in &input {
            fix.feed(std::slice::from_ref(byte), &mut out).unwrap();
        }
        assert_eq!(&out[..PREFACE.len()], PREFACE);
        let got = frames(&out);
        let kinds: Vec<_> = got.iter().map(|f| (f.0, f.1, f.2)).collect();
        assert_eq!(
            kinds,
            [
                (0x4, 0, 0),
                (HEADERS, END_HEADERS, 1),
                (0x0, END_STREAM, 1),
                (HEADERS, END_HEADERS | END_STREAM, 3)
            ]
        );
        assert_eq!(got[2].3, b"data");
        // What h2 decodes: the same headers, a valid authority, and no dynamic table use.
        let mut server = Decoder::new();
        for block in [&got[1].3, &got[3].3] {
            let headers = server.decode(block).unwrap();
            let authority = headers.iter().find(|(n, _)| n == b":authority").unwrap();
            assert_eq!(authority.1, b"localhost");
            let path = headers.iter().find(|(n, _)| n == b":path").unwrap();
            assert_eq!(path.1, b"/SpiffeWorkloadAPI/FetchX509SVID");
            assert_eq!(headers.len(), 5);
        }
    }

    #[test]
    fn a_valid_authority_is_kept() {
        let mut client = Encoder::new();
        let block = request(&mut client, b"localhost", b"/x");
        let mut input = PREFACE.to_vec();
        input.extend(frame(HEADERS, END_HEADERS, 1, &block));
        let mut out = Vec::new();
        AuthorityFix::new().feed(&input, &mut out).unwrap();
        let headers = Decoder::new().decode(&frames(&out)[0].3).unwrap();
        assert!(headers.contains(&(b":authority".to_vec(), b"localhost".to_vec())));
    }

    #[test]
    fn hostile_input_is_refused() {
        let feed = |bytes: &[u8]| {
            let mut input = PREFACE.to_vec();
            input.extend_from_slice(bytes);
            AuthorityFix::new().feed(&input, &mut Vec::new())
        };
        assert!(matches!(
            AuthorityFix::new().feed(b"GET / HTTP/1.1\r\n", &mut Vec::new()),
            Err(FixError::Preface)
        ));
        let mut big = vec![0x01, 0x00, 0x00, HEADERS, 0, 0, 0, 0, 1];
        big.resize(9 + 10, 0);
        assert!(matches!(feed(&big), Err(FixError::FrameTooLarge(65536))));
        // Padding longer than the frame.
        assert!(matches!(
            feed(&frame(HEADERS, PADDED | END_HEADERS, 1, &[9, 1])),
            Err(FixError::Malformed)
        ));
        // A DATA frame inside a header block; a CONTINUATION with no block.
        let mut interleaved = frame(HEADERS, 0, 1, &[0x82]);
        interleaved.extend(frame(0x0, 0, 1, b"x"));
        assert!(matches!(feed(&interleaved), Err(FixError::Interleaved)));
        assert!(matches!(
            feed(&frame(CONTINUATION, END_HEADERS, 1, &[0x82])),
            Err(FixError::Interleaved)
        ));
        // An index nothing has.
        assert!(matches!(
            feed(&frame(HEADERS, END_HEADERS, 1, &[0xff, 0x10])),
            Err(FixError::Hpack(_))
        ));
        // A small block that decodes to more than MAX_BLOCK: one large table entry, then
        // thousands of references to it.
        let mut client = Encoder::new();
        let value = vec![b'a'; 3_000];
        let mut block = client.encode([(&b"x-big"[..], &value[..])]);
        let again = client.encode([(&b"x-big"[..], &value[..])]);
        for _ in 0..100 {
            block.extend_from_slice(&again);
        }
        let mut frames = frame(HEADERS, 0, 1, &block[..MAX_FRAME.min(block.len())]);
        if block.len() > MAX_FRAME {
            frames.extend(frame(CONTINUATION, END_HEADERS, 1, &block[MAX_FRAME..]));
        } else {
            frames = frame(HEADERS, END_HEADERS, 1, &block);
        }
        assert!(matches!(feed(&frames), Err(FixError::BlockTooLarge)));
    }

    /// Random frames (of the kinds that matter, with random flags and payloads) never panic and
    /// never grow the buffers past their bounds.
    #[test]
    fn random_frames_never_panic() {
        for _ in 0..2_000 {
            let mut fix = AuthorityFix::new();
            let mut out = Vec::new();
            let mut input = PREFACE.to_vec();
            for _ in 0..rand::random_range(1..6) {
                let kind = [HEADERS, CONTINUATION, 0x0, 0x4][rand::random_range(0..4)];
                let flags: u8 = rand::random();
                let len = rand::random_range(0..64);
                let payload: Vec<u8> = (0..len).map(|_| rand::random()).collect();
                input.extend(frame(kind, flags, rand::random_range(0..4), &payload));
            }
            let cut = rand::random_range(0..=input.len());
            if fix.feed(&input[..cut], &mut out).is_ok() {
                let _ = fix.feed(&input[cut..], &mut out);
            }
            assert!(fix.input.len() <= FRAME_HEADER + MAX_FRAME);
        }
    }

    #[test]
    fn integers_follow_rfc_7541() {
        // RFC 7541, C.1.2: 1337 with a 5-bit prefix; here a 7-bit prefix as strings use.
        let mut out = Vec::new();
        put_integer(1337, 5, &mut out);
        assert_eq!(out, [31, 154, 10]);
        out.clear();
        put_integer(126, 7, &mut out);
        assert_eq!(out, [126]);
        out.clear();
        put_integer(127, 7, &mut out);
        assert_eq!(out, [127, 0]);
    }
}
