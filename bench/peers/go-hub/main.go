// go-hub: a broadcast server for the weim benchmarks, written in the style
// of gorilla/websocket's chat example (a hub goroutine with register,
// unregister and broadcast channels; per client a readPump, a writePump and
// a buffered send channel). It speaks the minimal part of weim's protocol
// that weim-load uses: GET /ws, sign-in with Cmd 3 -> Cmd 4, and
// POST /ws/sendToAll -> Cmd -1 to every signed-in connection.
//
// usage: go-hub [ADDR]   (default $LISTEN, else 127.0.0.1:8080)
// environment: JWT_SECRET (HS256 secret of the sign-in tokens; empty =
// accept any token), ADMIN_TOKEN (default "bench").
package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
)

var (
	jwtSecret  = []byte(os.Getenv("JWT_SECRET"))
	adminToken = envOr("ADMIN_TOKEN", "bench")
	upgrader   = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024}
)

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

type frame struct {
	Cmd    int
	FromId int64
	ToId   int64
	Ope    int
	Type   int
	Body   string
	Id     int64
	Time   int64
}

func serverFrame(cmd, ope, typ int, body string) []byte {
	b, _ := json.Marshal(frame{Cmd: cmd, Ope: ope, Type: typ, Body: body, Time: time.Now().UnixMilli()})
	return b
}

// verifyToken checks an HS256 JWT: signature and expiry.
func verifyToken(tok string) bool {
	if len(jwtSecret) == 0 {
		return true
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return false
	}
	mac := hmac.New(sha256.New, jwtSecret)
	mac.Write([]byte(parts[0]))
	mac.Write([]byte{'.'})
	mac.Write([]byte(parts[1]))
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
		return false
	}
	var header struct{ Alg string }
	if h, err := base64.RawURLEncoding.DecodeString(parts[0]); err != nil || json.Unmarshal(h, &header) != nil || header.Alg != "HS256" {
		return false
	}
	var claims struct {
		Id  int64 `json:"id"`
		Exp int64 `json:"exp"`
	}
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil || json.Unmarshal(p, &claims) != nil {
		return false
	}
	return claims.Id > 0 && claims.Exp > time.Now().Unix()
}

// serveWs handles websocket requests from the peer.
func serveWs(hub *Hub, w http.ResponseWriter, r *http.Request) {
	conn, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	client := &Client{hub: hub, conn: conn, send: make(chan []byte, sendBuffer)}
	go client.writePump()
	go client.readPump()
}

func reply(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprint(w, body)
}

func sendToAll(hub *Hub, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		reply(w, http.StatusMethodNotAllowed, `{"code":1000,"msg":"method not allowed","data":null}`)
		return
	}
	if r.Header.Get("Admin-Token") != adminToken {
		reply(w, http.StatusOK, `{"code":1001,"msg":"鉴权失败","data":null}`)
		return
	}
	if err := r.ParseForm(); err != nil {
		reply(w, http.StatusBadRequest, `{"code":1000,"msg":"bad request","data":null}`)
		return
	}
	body := r.Form.Get("body")
	if body == "" {
		body = "测试消息收发"
	}
	done := make(chan int, 1)
	hub.broadcast <- broadcast{frame: serverFrame(-1, 0, 0, body), done: done}
	n := <-done
	reply(w, http.StatusOK, fmt.Sprintf(`{"code":0,"msg":"ok","data":{"local":%d}}`, n))
}

func main() {
	addr := envOr("LISTEN", "127.0.0.1:8080")
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	hub := newHub()
	go hub.run()
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) { serveWs(hub, w, r) })
	mux.HandleFunc("/ws/sendToAll", func(w http.ResponseWriter, r *http.Request) { sendToAll(hub, w, r) })
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal("listen: ", err)
	}
	fmt.Printf("listening on %s\n", ln.Addr())
	log.Fatal(http.Serve(ln, mux))
}
