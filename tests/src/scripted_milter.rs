//! A scripted milter (a content filter of the tests' own) on a loopback
//! port: it negotiates every action and every step, then answers each
//! command as a test's script says.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// One milter packet: length, command byte, data.
pub fn packet(code: u8, data: &[u8]) -> Vec<u8> {
    let mut out = ((data.len() + 1) as u32).to_be_bytes().to_vec();
    out.push(code);
    out.extend_from_slice(data);
    out
}

/// What the scripted milter does about one command.
#[derive(Clone)]
pub enum Act {
    /// Send these bytes.
    Send(Vec<u8>),
    /// Send nothing (a command that gets no reply).
    Nothing,
    /// Never answer.
    Hang,
    /// Close the connection.
    Close,
    /// Send these bytes, then close the connection.
    SendThenClose(Vec<u8>),
}

/// The script: the command byte and its data in, what to do out.
pub type Script = Arc<dyn Fn(u8, &[u8]) -> Act + Send + Sync>;

/// A milter on 127.0.0.1:0: negotiates (all actions, all steps), then
/// follows `script` for each command (macros get nothing unless the
/// script says otherwise). Returns its port.
pub fn milter(script: Script) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let script = Arc::clone(&script);
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(120)));
                loop {
                    let mut len = [0u8; 4];
                    if s.read_exact(&mut len).is_err() {
                        return;
                    }
                    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                    if s.read_exact(&mut body).is_err() {
                        return;
                    }
                    let (code, data) = (body[0], &body[1..]);
                    let act = match code {
                        b'O' => {
                            let mut d = 6u32.to_be_bytes().to_vec();
                            d.extend_from_slice(&0x1ffu32.to_be_bytes());
                            d.extend_from_slice(&0u32.to_be_bytes());
                            Act::Send(packet(b'O', &d))
                        }
                        b'D' | b'A' => Act::Nothing,
                        b'Q' => return,
                        _ => script(code, data),
                    };
                    match act {
                        Act::Send(bytes) => {
                            if s.write_all(&bytes).is_err() {
                                return;
                            }
                        }
                        Act::Nothing => {}
                        Act::Hang => std::thread::sleep(Duration::from_secs(30)),
                        Act::Close => return,
                        Act::SendThenClose(bytes) => {
                            let _ = s.write_all(&bytes);
                            return;
                        }
                    }
                }
            });
        }
    });
    port
}

/// "Continue".
pub fn cont() -> Act {
    Act::Send(packet(b'c', b""))
}
