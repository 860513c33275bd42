// Package netproxy is a TCP proxy that makes a loopback connection behave
// like a real network link, for tests and benchmarks: added latency, limited
// bandwidth, a link that silently drops everything (dead Wi-Fi), connection
// resets and a refusing port.
//
// # What it owns
//
// A Proxy listens on one address and forwards every accepted connection to
// one target address. Each accepted connection is a pair (client side,
// upstream side) with two pipes, up (client to target) and down (target to
// client). It owns those sockets and the goroutines that move bytes through
// them; nothing else.
//
// # How the link is modelled
//
//   - Latency (SetLatency): every chunk is timestamped when it is read and
//     written out at readTime+oneWay, through a FIFO queue per pipe, so many
//     chunks are in flight at once and throughput is not limited to one chunk
//     per delay. A round trip grows by 2*oneWay. Order is always kept: when the
//     latency is lowered, later chunks still wait for the ones ahead of them.
//   - Bandwidth (SetBandwidth): one link per direction, shared by all
//     connections of the Proxy, like the bottleneck of a real network. A chunk
//     is "on the wire" for len/rate before its latency starts; the reader waits
//     for that, so a sender is slowed by ordinary TCP back-pressure rather
//     than by a growing buffer. Reads are cut to about 20 ms worth of bytes
//     so pacing stays smooth. A reader that wakes up late (up to 40 ms, a
//     busy machine) does not leave the link idle for that time: its
//     bytes were waiting, so they go on the wire where the last ones
//     ended.
//   - Blackhole: bytes (and FIN/RST) read while it is on vanish; chunks
//     already queued that come due while it is on vanish too. Connections stay
//     open. Connections accepted while it is on are not forwarded to the target
//     until it is turned off (the SYN never arrived); then they are dialed and
//     forward what comes after. Bytes dropped stay dropped, so a protocol on
//     top (SSH) will usually fail afterwards: that is what a dead link does.
//   - ResetAll closes every current connection on both sides with a TCP RST.
//   - Refuse(true) closes the listening socket, so new connections get
//     ECONNREFUSED; Refuse(false) listens again on the same address.
//
// Connection set-up itself adds no delay: the client's connect completes at
// once and the upstream dial is made at accept; only data is delayed.
// Settings apply to bytes read after the call returns; bytes already waiting
// keep the times they were given.
//
// # Concurrency
//
// Every method is safe for concurrent use, including while traffic flows.
// Each pipe has one reader goroutine (socket to queue) and one writer
// goroutine (queue to socket); a dialer goroutine per connection makes the
// upstream connection. Close stops all of them and waits.
//
// Locks: Proxy.mu guards the listener, the set of connections and the
// blackhole channel; pair.mu guards one connection's upstream socket and
// teardown state; link.mu guards one direction's bandwidth clock. Order:
// Proxy.mu is never held while taking pair.mu (connections are snapshotted
// first); link.mu is a leaf. No lock is held across socket I/O or a sleep.
//
// # How it can block
//
// A writer blocked on a receiver that does not read (full TCP window) holds
// its pipe's queue, which bounds memory (queueLen chunks per pipe) and in
// turn stops the reader: exactly TCP back-pressure. Close, ResetAll and
// the teardown of a connection unblock every goroutine of that connection by
// closing its sockets and its done channel.
package netproxy
