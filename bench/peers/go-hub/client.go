package main

import (
	"encoding/json"
	"time"

	"github.com/gorilla/websocket"
)

const (
	// Time allowed to write a message to the peer.
	writeWait = 10 * time.Second
	// Time allowed to read the next pong message from the peer.
	pongWait = 60 * time.Second
	// Send pings to the peer with this period. Must be less than pongWait.
	pingPeriod = (pongWait * 9) / 10
	// Maximum message size allowed from the peer (a sign-in frame is
	// about 200 bytes).
	maxMessageSize = 1024
	// Messages queued per client before the hub drops it.
	sendBuffer = 256
)

// Client is a middleman between one WebSocket connection and the hub.
type Client struct {
	hub  *Hub
	conn *websocket.Conn
	// Buffered channel of outbound frames.
	send chan []byte
}

type clientMsg struct {
	Cmd  int
	Body string
}

// readPump reads from the connection. The first useful message is the
// sign-in (Cmd 3); only a signed-in client is registered with the hub.
func (c *Client) readPump() {
	signedIn := false
	defer func() {
		if signedIn {
			c.hub.unregister <- c
		} else {
			close(c.send)
		}
		c.conn.Close()
	}()
	c.conn.SetReadLimit(maxMessageSize)
	c.conn.SetReadDeadline(time.Now().Add(pongWait))
	c.conn.SetPongHandler(func(string) error { c.conn.SetReadDeadline(time.Now().Add(pongWait)); return nil })
	for {
		_, message, err := c.conn.ReadMessage()
		if err != nil {
			return
		}
		if signedIn {
			continue
		}
		var m clientMsg
		if json.Unmarshal(message, &m) != nil {
			c.send <- serverFrame(2, 2, 10, "消息格式错误")
			continue
		}
		if m.Cmd != 3 {
			c.send <- serverFrame(2, 2, 10, "你还未认证")
			continue
		}
		if !verifyToken(m.Body) {
			c.send <- serverFrame(2, 2, 10, "认证失败")
			continue
		}
		// Queued before registering, so it precedes every broadcast.
		c.send <- serverFrame(4, 2, 10, "认证成功")
		c.hub.register <- c
		signedIn = true
	}
}

// writePump writes the frames queued for this client, one WebSocket
// message each, and pings the peer every pingPeriod. (The chat example
// joins queued messages into one message with newlines; here every frame
// must stay one JSON object.)
func (c *Client) writePump() {
	ticker := time.NewTicker(pingPeriod)
	defer func() {
		ticker.Stop()
		c.conn.Close()
	}()
	for {
		select {
		case message, ok := <-c.send:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if !ok {
				// The hub closed the channel.
				c.conn.WriteMessage(websocket.CloseMessage, []byte{})
				return
			}
			w, err := c.conn.NextWriter(websocket.TextMessage)
			if err != nil {
				return
			}
			w.Write(message)
			if err := w.Close(); err != nil {
				return
			}
		case <-ticker.C:
			c.conn.SetWriteDeadline(time.Now().Add(writeWait))
			if err := c.conn.WriteMessage(websocket.PingMessage, nil); err != nil {
				return
			}
		}
	}
}
