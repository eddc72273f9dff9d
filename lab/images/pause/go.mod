module sdn-tunnel.local/lab/pause

go 1.21
