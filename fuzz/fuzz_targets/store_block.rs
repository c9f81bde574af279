//! The store's block decoder on any bytes, with a correct checksum appended so the fuzzer gets
//! past it. What decodes must survive encoding: a block the encoder wrote decodes to the samples
//! it was given. (Hand-made blocks may hold what the encoder never writes, such as a standard
//! deviation beside equal RTTs, so the first decode is only the encoder's input.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use vantage_store::codec::{decode_block, encode_block};

fuzz_target!(|data: &[u8]| {
    let _ = decode_block(data);
    let mut block = data.to_vec();
    block.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    if let Ok(samples) = decode_block(&block) {
        let written = decode_block(&encode_block(&samples).0).expect("an encoded block decodes");
        let again = decode_block(&encode_block(&written).0).expect("an encoded block decodes");
        assert_eq!(again, written, "encoding is stable");
    }
});
