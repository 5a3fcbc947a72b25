//! `crdgen`: writes the CRD YAML rendered from the Rust types into a folder
//! (default `deploy/crds`), or prints it with `--stdout`.
use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut out = PathBuf::from("deploy/crds");
    let mut stdout = false;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--stdout" => stdout = true,
            "--out" => match args.next() {
                Some(dir) => out = PathBuf::from(dir),
                None => {
                    eprintln!("crdgen: --out needs a folder");
                    return ExitCode::from(2);
                }
            },
            "-h" | "--help" => {
                println!("usage: crdgen [--out DIR | --stdout]   (default DIR: deploy/crds)");
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("crdgen: unknown argument {other:?}; see --help");
                return ExitCode::from(2);
            }
        }
    }
    let files = match cipherlane_k8s_api::crd_yaml() {
        Ok(files) => files,
        Err(err) => {
            eprintln!("crdgen: {err}");
            return ExitCode::FAILURE;
        }
    };
    for (name, yaml) in files {
        if stdout {
            print!("---\n{yaml}");
            continue;
        }
        let path = out.join(name);
        if let Err(err) =
            std::fs::create_dir_all(&out).and_then(|()| std::fs::write(&path, yaml.as_bytes()))
        {
            eprintln!("crdgen: writing {} failed: {err}", path.display());
            return ExitCode::FAILURE;
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}
