//! Manual try-out of the library, shaped like `redoubt doctor` / `redoubt
//! triage` (the real CLI lives in the `redoubt` binary):
//!
//! ```text
//! cargo run -p doctor --example doctor -- redis://127.0.0.1:6379 [--json]
//! cargo run -p doctor --example doctor -- triage FILE... [--json] < log
//! ```

use std::io::IsTerminal;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let json = args.iter().any(|a| a == "--json");
    let rest: Vec<&String> = args.iter().filter(|a| *a != "--json").collect();
    let color = std::io::stdout().is_terminal();
    let code = if rest.first().map(|s| s.as_str()) == Some("triage") {
        let files = &rest[1..];
        let read = if files.is_empty() {
            doctor::triage_reader(std::io::stdin().lock()).map_err(|e| e.to_string())
        } else {
            doctor::triage_files(files).map_err(|e| e.to_string())
        };
        let r = match read {
            Ok(r) => r,
            Err(e) => {
                eprintln!("triage: {e}");
                std::process::exit(4);
            }
        };
        if json {
            println!("{}", r.to_json());
        } else {
            print!("{}", r.render_text(color));
        }
        r.exit_code()
    } else {
        let url = rest
            .first()
            .map(|s| s.as_str())
            .unwrap_or("redis://127.0.0.1:6379");
        let r = doctor::diagnose(url, &doctor::DoctorOptions::default()).await;
        if json {
            println!("{}", r.to_json());
        } else {
            print!("{}", r.render_text(color));
        }
        r.exit_code()
    };
    std::process::exit(code);
}
