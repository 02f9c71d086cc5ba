//! Smoke test: every bundled example kernel parses and checks.

#[test]
fn bundled_examples_check() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/kernels");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().and_then(|s| s.to_str()) != Some("qk") {
            continue;
        }
        let src = std::fs::read_to_string(&p).unwrap();
        match qkc_dsl::compile(&p.display().to_string(), &src) {
            Ok(prog) => {
                for k in &prog.kernels {
                    println!("{k}");
                    for o in &k.proofs {
                        println!("{o}");
                    }
                }
            }
            Err(d) => panic!("{}", d.render()),
        }
        n += 1;
    }
    assert!(n >= 4);
}
