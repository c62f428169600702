//! The JSON config file parser (strict: unknown fields are errors) and the
//! endpoint and key parsers it uses: never a panic; a config that parses
//! prints to JSON that parses to the same config.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(c) = crust::Config::from_json(text) {
        let again = crust::Config::from_json(&c.to_json()).expect("a printed config parses");
        assert_eq!(again, c);
    }
    if let Ok(e) = text.parse::<transport::Endpoint>() {
        assert_eq!(e.to_string().parse::<transport::Endpoint>().unwrap(), e);
    }
    if let Ok(e) = text.parse::<transport::ListenEndpoint>() {
        assert_eq!(e.to_string().parse::<transport::ListenEndpoint>().unwrap(), e);
    }
    if let Ok(k) = text.parse::<transport::PublicKey>() {
        assert_eq!(k.to_string().parse::<transport::PublicKey>().unwrap(), k);
    }
});
