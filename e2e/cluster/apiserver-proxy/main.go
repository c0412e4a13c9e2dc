// apiserver-proxy: a TCP forwarder from the real node's address to the API server on
// 127.0.0.1, so that pods on the real node reach the API through the `kubernetes` Service
// (10.96.0.1:443 -> this address, by kube-proxy) while the API server itself keeps listening
// on loopback only. TLS passes through untouched: clients still verify the API server's
// certificate (its SANs include the Service IP) and authenticate to it with their own token.
//
// Usage: apiserver-proxy <listen host:port> <upstream host:port>
package main

import (
	"io"
	"log"
	"net"
	"os"
)

func main() {
	if len(os.Args) != 3 {
		log.Fatal("usage: apiserver-proxy <listen host:port> <upstream host:port>")
	}
	ln, err := net.Listen("tcp", os.Args[1])
	if err != nil {
		log.Fatal(err)
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			log.Print(err)
			continue
		}
		go forward(c, os.Args[2])
	}
}

func forward(c net.Conn, upstream string) {
	defer c.Close()
	u, err := net.Dial("tcp", upstream)
	if err != nil {
		log.Print(err)
		return
	}
	defer u.Close()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(u, c); done <- struct{}{} }()
	go func() { _, _ = io.Copy(c, u); done <- struct{}{} }()
	<-done
}
