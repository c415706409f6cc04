package main

// Hub keeps the set of signed-in clients and broadcasts to them, in the
// manner of gorilla/websocket's chat example: one goroutine owns the client
// set and is driven by the register, unregister and broadcast channels.
type Hub struct {
	clients    map[*Client]bool
	broadcast  chan broadcast
	register   chan *Client
	unregister chan *Client
}

// A broadcast carries one encoded frame and reports how many clients it
// was queued to (the `local` of the sendToAll answer).
type broadcast struct {
	frame []byte
	done  chan int
}

func newHub() *Hub {
	return &Hub{
		clients:    make(map[*Client]bool),
		broadcast:  make(chan broadcast),
		register:   make(chan *Client),
		unregister: make(chan *Client),
	}
}

func (h *Hub) run() {
	for {
		select {
		case client := <-h.register:
			h.clients[client] = true
		case client := <-h.unregister:
			if _, ok := h.clients[client]; ok {
				delete(h.clients, client)
				close(client.send)
			}
		case b := <-h.broadcast:
			n := 0
			for client := range h.clients {
				select {
				case client.send <- b.frame:
					n++
				default:
					// The client's send buffer is full: drop it, as the
					// chat example does.
					close(client.send)
					delete(h.clients, client)
				}
			}
			b.done <- n
		}
	}
}
