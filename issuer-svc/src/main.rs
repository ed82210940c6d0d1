//! `meshca`: see `meshca --help`.

#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    issuer_svc::main()
}
