use super::*;

/// A masked frame header for `len` payload bytes, in the shortest form.
fn header(first: u8, len: u64) -> Vec<u8> {
    let mut h = vec![first];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    h.extend_from_slice(&[1, 2, 3, 4]);
    h
}

/// A frame: header and `len` bytes of `fill`.
fn whole(first: u8, len: usize, fill: u8) -> Vec<u8> {
    let mut f = header(first, len as u64);
    f.extend(vec![fill; len]);
    f
}

/// What the guard emits in place of a refused frame.
fn stand_in(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame(&mut out, first, payload);
    out.to_vec()
}

fn guard(max: usize) -> FrameGuard<futures_util::stream::Empty<Result<Bytes, PayloadError>>> {
    FrameGuard::new(futures_util::stream::empty(), max)
}

/// Feeds `input` in pieces of `step` bytes; returns everything passed on.
fn run(max: usize, input: &[u8], step: usize) -> Result<Vec<u8>, PayloadError> {
    let mut guard = guard(max);
    let mut out = Vec::new();
    for piece in input.chunks(step) {
        out.extend_from_slice(&guard.feed(piece)?);
    }
    match guard.failed.take() {
        Some((e, _)) => Err(e),
        None => Ok(out),
    }
}

/// Feeds `input` split at every size of piece that matters (one byte,
/// around the header lengths, all at once) and expects `expected` each time.
fn assert_every_split(max: usize, input: &[u8], expected: &[u8]) {
    for step in [1, 2, 3, 13, 14, 15, 100_000] {
        assert_eq!(
            run(max, input, step).expect("passes"),
            expected,
            "step {step}"
        );
    }
}

#[test]
fn frames_within_the_limit_pass_unchanged_however_the_bytes_are_split() {
    let mut input = whole(0x81, 5, b'h');
    input.extend(whole(0x01, 300, 7)); // first fragment
    input.extend(whole(0x89, 3, 1)); // a ping between fragments
    input.extend(whole(0x80, 300, 8)); // last fragment
    input.extend(whole(0x89, 0, 0));
    assert_every_split(300, &input, &input);
}

#[test]
fn an_oversize_message_becomes_one_marked_pong_in_its_place() {
    let before = whole(0x81, 2, b'a');
    let after = whole(0x81, 2, b'b');
    // A whole oversize frame, then an oversize first fragment whose
    // continuations (a ping between them) are dropped with it.
    let mut input = before.clone();
    input.extend(whole(0x81, 70_000, 9));
    input.extend(whole(0x01, 200, 9));
    input.extend(whole(0x00, 50, 9));
    input.extend(whole(0x89, 1, 5));
    input.extend(whole(0x80, 50, 9));
    input.extend(after.clone());
    let mut expected = before;
    expected.extend(stand_in(0x8a, OVERSIZE_PONG));
    expected.extend(stand_in(0x8a, OVERSIZE_PONG));
    expected.extend(whole(0x89, 1, 5));
    expected.extend(after);
    assert_every_split(100, &input, &expected);
}

#[test]
fn an_oversize_later_fragment_ends_its_message_with_a_marked_last_fragment() {
    let mut input = whole(0x01, 50, b'x');
    input.extend(whole(0x00, 500, 9)); // over the limit
    input.extend(whole(0x80, 50, 9)); // dropped with it
    input.extend(whole(0x81, 2, b'b'));
    let mut expected = whole(0x01, 50, b'x');
    expected.extend(stand_in(0x80, TRUNCATED));
    expected.extend(whole(0x81, 2, b'b'));
    assert_every_split(100, &input, &expected);
}

#[test]
fn the_stand_in_goes_out_as_soon_as_the_header_is_in_and_nothing_is_kept() {
    let mut guard = guard(10);
    let out = guard.feed(&header(0x81, 1 << 40)).expect("header");
    assert_eq!(out.to_vec(), stand_in(0x8a, OVERSIZE_PONG));
    for _ in 0..100 {
        assert!(guard.feed(&[0u8; 65536]).expect("body").is_empty());
    }
    assert_eq!(guard.state, State::Skip((1 << 40) - 100 * 65536));
}

#[test]
fn broken_framing_ends_the_stream_with_an_error() {
    let mut top_bit = vec![0x81, 0x80 | 127];
    top_bit.extend_from_slice(&(1u64 << 63).to_be_bytes());
    top_bit.extend_from_slice(&[1, 2, 3, 4]);
    let long_ping = whole(0x89, 126, 0);
    let orphan = whole(0x80, 3, 0);
    let mut new_message_while_dropping = whole(0x01, 500, 0);
    new_message_while_dropping.extend(whole(0x81, 2, 0));
    let mut new_message_inside_one = whole(0x01, 5, 0);
    new_message_inside_one.extend(whole(0x81, 2, 0));
    for bad in [
        top_bit,
        long_ping,
        orphan,
        new_message_while_dropping,
        new_message_inside_one,
    ] {
        assert!(
            matches!(run(100, &bad, 3), Err(PayloadError::Overflow)),
            "{bad:?}"
        );
    }
}

#[test]
fn the_frames_before_a_bad_one_pass_and_the_error_is_held_after_them() {
    let good = whole(0x81, 5, b'h');
    let mut input = good.clone();
    input.extend(whole(0xc1, 2, 0)); // a reserved bit
    let mut guard = guard(100);
    assert_eq!(guard.feed(&input).expect("the good frame").to_vec(), good);
    assert!(matches!(
        guard.failed,
        Some((PayloadError::Overflow, false))
    ));
    assert!(guard.feed(b"more").is_err());
}

#[test]
fn a_close_frame_passes_only_as_the_codec_takes_it() {
    let mut ok = vec![0x88, 0x80 | 5, 0, 0, 0, 0];
    ok.extend_from_slice(&4001u16.to_be_bytes());
    ok.extend_from_slice(b"bye");
    assert_every_split(100, &ok, &ok);
    let empty = vec![0x88, 0x80, 0, 0, 0, 0];
    assert_every_split(100, &empty, &empty);
    let with = |payload: &[u8]| {
        let mut f = vec![0x88, 0x80 | payload.len() as u8, 1, 2, 3, 4];
        f.extend(
            payload
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
        );
        f
    };
    assert_every_split(100, &with(b"\x03\xe8ok"), &with(b"\x03\xe8ok"));
    let mut bad = vec![with(&[3]), with(b"\x03\xe8\xff")];
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 2000, 5000] {
        bad.push(with(&code.to_be_bytes()));
    }
    // A fragmented control frame.
    bad.push(whole(0x09, 1, 0));
    for bad in bad {
        for step in [1, 3, 100] {
            assert!(run(100, &bad, step).is_err(), "{bad:?}, step {step}");
        }
    }
}

#[test]
fn a_frame_the_codec_refuses_is_refused_small_or_oversize() {
    for len in [10, 500, 1 << 40] {
        let rsv1 = header(0xc1, len);
        let reserved_opcode = header(0x83, len);
        let mut unmasked = header(0x81, len);
        unmasked[1] &= 0x7f;
        unmasked.truncate(unmasked.len() - 4);
        for bad in [rsv1, reserved_opcode, unmasked] {
            assert!(
                matches!(run(100, &bad, 3), Err(PayloadError::Overflow)),
                "{len}: {bad:?}"
            );
        }
    }
}

#[test]
fn a_clients_pong_passes_empty_so_none_can_pass_for_the_stand_in() {
    let mut marked = vec![0x8a, 0x80 | OVERSIZE_PONG.len() as u8, 0, 0, 0, 0];
    marked.extend_from_slice(OVERSIZE_PONG);
    let mut input = marked;
    input.extend(whole(0x8a, 3, 1));
    input.extend(whole(0x81, 2, b'a'));
    let mut expected = stand_in(0x8a, b"");
    expected.extend(stand_in(0x8a, b""));
    expected.extend(whole(0x81, 2, b'a'));
    assert_every_split(100, &input, &expected);
}
