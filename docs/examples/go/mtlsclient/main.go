// mtlsclient: a Go client of a service behind `mtls server` (docs/go.md). It presents
// CHAIN/KEY (the PEM files mtls writes), trusts ROOT only, checks that the server's
// certificate names HOST (and, if given, carries the expected SPIFFE ID), sends one line and
// prints the answer.
//
//	mtlsclient HOST:PORT client-chain.pem client.key root.pem [spiffe://expected/server/id]
//
// Exit 0 when the line came back, 1 when refused (the reason on stderr), 2 on usage.
package main

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"time"

	"example.org/mtls-go/mtlsgo"
)

func fail(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "refused: "+format+"\n", a...)
	os.Exit(1)
}

func main() {
	if len(os.Args) < 5 || len(os.Args) > 6 {
		fmt.Fprintln(os.Stderr, "usage: mtlsclient HOST:PORT CHAIN.pem KEY ROOT.pem [EXPECTED_SERVER_URI]")
		os.Exit(2)
	}
	host, _, err := net.SplitHostPort(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	k, err := mtlsgo.NewKeypair(os.Args[2], os.Args[3])
	if err != nil {
		fail("%v", err)
	}
	roots, err := mtlsgo.Roots(os.Args[4])
	if err != nil {
		fail("%v", err)
	}
	d := &net.Dialer{Timeout: mtlsgo.Deadline}
	conn, err := tls.DialWithDialer(d, "tcp", os.Args[1], mtlsgo.ClientConfig(k, roots, host))
	if err != nil {
		fail("%v", err)
	}
	defer conn.Close()
	ids := mtlsgo.SPIFFEIDs(conn.ConnectionState().PeerCertificates[0])
	if len(os.Args) == 6 {
		found := false
		for _, id := range ids {
			found = found || id == os.Args[5]
		}
		if !found {
			fail("the server is %v, not %s", ids, os.Args[5])
		}
	}
	_ = conn.SetDeadline(time.Now().Add(mtlsgo.Deadline))
	if _, err := conn.Write([]byte("hello from go\n")); err != nil {
		fail("%v", err)
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		fail("no answer (our certificate refused?): %v", err)
	}
	fmt.Print(line)
}
