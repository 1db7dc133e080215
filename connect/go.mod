module github.com/studio-spawner/connect

go 1.26
